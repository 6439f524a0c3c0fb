#!/usr/bin/env python3
"""Replays the Dockerfile's dependency layer without Docker, so that a missing manifest fails CI.

The builder stage first copies only the manifests and builds against stub sources (a layer
that stays cached until a Cargo.toml or Cargo.lock changes). Cargo refuses to load a workspace
when any member's manifest is missing, so a crate added to the workspace but not to the
Dockerfile breaks `docker build` while every test still passes; that happened once
(tunnel-bench and tunnel-alloc-count). This script

  1. checks that every workspace member's Cargo.toml is copied by a COPY line, and
  2. replays the builder stage up to the first COPY of a directory (the real sources) in a
     temporary directory: file COPYs copy, RUNs run under `sh -e`, with each
     `cargo build ...` replaced by `cargo metadata --locked`, which loads the workspace and checks
     the lock file as the build would, without compiling.

Usage: ci/check-dockerfile-layer.py [DOCKERFILE]   (from anywhere)
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def instructions(path):
    """The Dockerfile's instructions as (keyword, argument) pairs, continuations joined."""
    out, pending = [], ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            line = pending + line
            pending = ""
            keyword, _, arg = line.strip().partition(" ")
            out.append((keyword.upper(), arg.strip()))
    return out


def builder_layer(steps):
    """The builder stage's steps before its first COPY of a directory."""
    stages = [i for i, (k, _) in enumerate(steps) if k == "FROM"]
    if not stages:
        sys.exit("FAIL: no FROM in the Dockerfile")
    end = stages[1] if len(stages) > 1 else len(steps)
    layer = []
    for keyword, arg in steps[stages[0] + 1 : end]:
        if keyword == "COPY":
            sources = shlex.split(arg)[:-1]
            if any(s.startswith("--") for s in sources):
                continue  # --from=... or flags: not part of the dependency layer
            if any(os.path.isdir(os.path.join(ROOT, s)) for s in sources):
                break
        layer.append((keyword, arg))
    return layer


def workspace_manifests():
    meta = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    data = json.loads(meta.stdout)
    members = set(data["workspace_members"])
    return sorted(
        os.path.relpath(p["manifest_path"], ROOT) for p in data["packages"] if p["id"] in members
    )


def main():
    dockerfile = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "Dockerfile")
    layer = builder_layer(instructions(dockerfile))
    copied = set()
    for keyword, arg in layer:
        if keyword == "COPY":
            parts = shlex.split(arg)
            copied.update(os.path.normpath(s) for s in parts[:-1])
    missing = [m for m in workspace_manifests() if m not in copied]
    if missing:
        sys.exit(f"FAIL: the Dockerfile's dependency layer does not COPY {', '.join(missing)}")

    with tempfile.TemporaryDirectory() as tmp:
        workdir = tmp
        for keyword, arg in layer:
            if keyword == "COPY":
                parts = shlex.split(arg)
                dest = parts[-1]
                for src in parts[:-1]:
                    target = os.path.join(workdir, dest)
                    if dest.endswith("/") or len(parts) > 2:
                        target = os.path.join(target, os.path.basename(src))
                    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
                    shutil.copy(os.path.join(ROOT, src), target)
            elif keyword == "RUN":
                script = re.sub(
                    r"cargo build [^&;|]*",
                    "cargo metadata --locked --format-version 1 >/dev/null ",
                    arg,
                )
                run = subprocess.run(["sh", "-ec", script], cwd=workdir)
                if run.returncode != 0:
                    sys.exit(f"FAIL: the Dockerfile's dependency layer fails at: RUN {arg}")
    print(f"ok: {len(copied)} files copied, the dependency layer loads the workspace")


if __name__ == "__main__":
    main()
