#!/usr/bin/env bash
# The benchmark of issue 5: tunnel vs the same backend reached directly, on loopback.
#
#   bench/run.sh            # full run (about 3 minutes after the build)
#   bench/run.sh --quick    # about a minute
#   bench/run.sh --out FILE # where the JSON figures go (default bench/results/latest.json)
#
# Any other flag goes to `tunnel-bench run` (see `--help` there).
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk (Debian package)" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo apt-get update
    $sudo apt-get install -y wrk
fi

cargo build --release --locked -p tunnel-server -p tunnel-client -p tunnel-bench

target_dir="${CARGO_TARGET_DIR:-target}"
# Absolute: the processes are started in another working directory.
bins="$(cd "$target_dir/release" && pwd)"

# 1,000 idle tunnels need as many sockets on both ends.
hard="$(ulimit -Hn)"
if [ "$hard" = "unlimited" ] || [ "$hard" -gt 8192 ]; then
    ulimit -n 8192
else
    ulimit -n "$hard"
fi

exec "$bins/tunnel-bench" run --bin-dir "$bins" "$@"
