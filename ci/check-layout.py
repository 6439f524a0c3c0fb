#!/usr/bin/env python3
"""Layout checks over every crate's `src/`, from the source text alone (no build needed).

1. No import cycle between the modules of a crate, at two levels: between files
   (`proxy::forward` -> `proxy::headers`) and between top-level modules, i.e. folders
   (`proxy` -> `tunnel`), where an edge inside one folder does not count.
2. No module imports upward: a module never names its own parent or any ancestor, the crate
   root included (a child that needs something of its parent's shows a part in the wrong place).
3. No source file over MAX_LINES lines, not counting `#[cfg(test)]` items in it; files under a
   `tests/` directory are not checked.
4. No function over MAX_FN_LINES lines outside `#[cfg(test)]` items.

An import is any path that starts with `crate::`, `super::` or `self::`, or with the name of a
child module, in a `use` item or in code (comments and string literals are removed first, so a
doc link is not an import). A path resolves to the longest module it names.

Known exceptions live in `ci/layout-exceptions.txt`, one per line with its reason; an exception
that no longer applies fails too, so that the list shrinks when the code is fixed.

Usage: ci/check-layout.py [ROOT]   (exit status 1 on any finding)
"""

import os
import re
import sys
from pathlib import Path

MAX_LINES = 600
MAX_FN_LINES = 80


def strip_code(text):
    """The text with comments, string and char literals blanked out (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:  # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(code, start):
    """Index just past the brace block that opens at or after `start`."""
    depth = 0
    for j in range(code.index("{", start), len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(code)


def without_tests(code):
    """`code` with every `#[cfg(test)]` item blanked out (newlines kept)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]", code)
        if not m:
            return code
        rest = code[m.end():]
        item = re.match(r"\s*(#\[[^\]]*\]\s*)*(pub(\([^)]*\))?\s+)?(mod|fn|impl|use|const|static|struct)\b", rest)
        if item and item.group(4) in ("use", "const", "static"):
            end = code.index(";", m.end()) + 1
        elif item and item.group(4) == "mod" and re.match(r"\s*mod\s+\w+\s*;", rest):
            end = code.index(";", m.end()) + 1
        else:
            end = matching_brace(code, m.end())
        code = code[:m.start()] + "\n" * code.count("\n", m.start(), end) + code[end:]


def module_files(src):
    """{module path tuple: file} for the library rooted at src/lib.rs (binaries: own roots)."""
    files = {}
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts == ["lib"]:
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        elif parts[0] in ("main", "bin"):
            continue  # binaries use the library by its name, like any other crate
        files[tuple(parts)] = path
    return files


USE_ITEM = re.compile(r"\buse\s+([^;]+);")
PATH = re.compile(r"(?<![\w:])((?:crate|super|self)(?:\s*::\s*\w+)+)")


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"^([\w:]*?)(::)?\{(.*)\}$", tree)
    if not m:
        return [re.sub(r"::\*$|as\w+$", "", tree)]
    prefix, body = m.group(1), m.group(3)
    items, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    out = []
    for item in filter(None, items):
        for sub in expand_use(item):
            out.append(f"{prefix}::{sub}" if prefix and sub != "self" else prefix or sub)
    return out


def resolve(path, here, modules, reexports=None):
    """The module a path names, from module `here`; None for other crates. A name that a
    module re-exports (`pub use child::Name`) resolves to where it comes from."""
    segs = [s for s in re.split(r"\s*::\s*", path) if s]
    if not segs:
        return None
    if segs[0] == "crate":
        base, segs = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = here
        while segs and segs[0] in ("super", "self"):
            base = base[:-1] if segs[0] == "super" else base
            segs = segs[1:]
    elif here + (segs[0],) in modules:
        base = here
    else:
        return None
    target = base
    for s in segs:
        if target + (s,) in modules:
            target += (s,)
        elif reexports and (target, s) in reexports:
            return reexports[(target, s)]
        else:
            break
    return target


PUB_USE = re.compile(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);")


def reexports_of(code, here, modules):
    """{(module, name): module the name comes from} for the `pub use` items of `here`."""
    out = {}
    for m in PUB_USE.finditer(code):
        for p in expand_use(m.group(1)):
            t = resolve(p, here, modules)
            last = re.split(r"::", p)[-1]
            alias = re.search(r"as(\w+)$", re.sub(r"\s+", "", m.group(1)))
            if t is not None and t != here and last != "*":
                out[(here, alias.group(1) if alias and "{" not in m.group(1) else last)] = t
    return out


def imports(code, here, modules, reexports):
    targets = set()
    for m in USE_ITEM.finditer(code):
        for p in expand_use(m.group(1)):
            t = resolve(p, here, modules, reexports)
            if t is not None:
                targets.add(t)
    body = USE_ITEM.sub("", code)
    for m in PATH.finditer(body):
        t = resolve(m.group(1), here, modules, reexports)
        if t is not None:
            targets.add(t)
    targets.discard(here)
    return targets


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


FN = re.compile(r"\bfn\s+(\w+)[^;{]*\{")


def long_functions(code):
    for m in FN.finditer(code):
        end = matching_brace(code, m.end() - 1)
        start_line = code.count("\n", 0, m.start()) + 1
        lines = code.count("\n", m.start(), end) + 1
        if lines > MAX_FN_LINES:
            yield m.group(1), start_line, lines


def name(mod):
    return "::".join(mod) or "crate"


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    exceptions = {}
    exc_file = root / "ci" / "layout-exceptions.txt"
    if exc_file.exists():
        for line in exc_file.read_text().splitlines():
            key, _, reason = line.partition("#")
            if key.strip():
                exceptions[key.strip()] = reason.strip()
    findings = []
    for src in sorted(root.glob("crates/*/src")):
        crate = src.parent.name
        modules = module_files(src)
        graph, folders = {}, {}
        codes = {mod: without_tests(strip_code(p.read_text())) for mod, p in modules.items()}
        reexports = {}
        for mod, code in codes.items():
            reexports.update(reexports_of(code, mod, modules))
        for mod, path in modules.items():
            code = codes[mod]
            rel = path.relative_to(root).as_posix()
            # Test items are blanked, not removed: count up to the last line of other code.
            non_test = code.rstrip().count("\n") + 1
            if non_test > MAX_LINES:
                findings.append(f"size {rel}: {non_test} lines outside tests (max {MAX_LINES})")
            for fn, line, n in long_functions(code):
                findings.append(f"function {rel} {fn}: {n} lines at line {line} (max {MAX_FN_LINES})")
            deps = imports(code, mod, modules, reexports)
            graph[mod] = deps
            for d in deps:
                if len(d) < len(mod) and mod[:len(d)] == d:
                    findings.append(f"upward {crate}: {name(mod)} imports its ancestor {name(d)}")
                if mod and d and d[0] != mod[0]:
                    folders.setdefault(mod[0], set()).add(d[0])
        for comp in cycles(graph):
            findings.append(f"cycle {crate} modules: " + " <-> ".join(map(name, comp)))
        for comp in cycles(folders):
            findings.append(f"cycle {crate} folders: " + " <-> ".join(comp))
    failed = False
    seen = set()
    for f in findings:
        key = next((k for k in exceptions if f.startswith(k)), None)
        if key is not None:
            seen.add(key)
            print(f"allowed: {f}  ({exceptions[key]})")
        else:
            print(f"FAIL: {f}")
            failed = True
    for key in sorted(set(exceptions) - seen):
        print(f"FAIL: exception no longer needed, remove it from ci/layout-exceptions.txt: {key}")
        failed = True
    if not failed:
        print("layout ok: no import cycles, no upward imports, sizes within limits")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
