#!/usr/bin/env bash
# The benchmark of issues 5 and 14: the tunnel against the same backends reached directly,
# through rathole and bore, and through two raw TCP relays (the floor), on loopback.
#
#   bench/run.sh            # full run (about 5 minutes after the builds)
#   bench/run.sh --quick    # about a minute
#   bench/run.sh --out FILE # where the JSON figures go (default bench/results/latest.json)
#
# Then `tunnel-bench inspect`: the traffic inspector on against off (bench/results/inspect.json),
# and `tunnel-bench cluster`: two pods sharing a Redis, a request entering the pod that holds
# the client against one entering the other pod, and recovery after `kill -9` of a pod
# (bench/results/cluster.json); and `tunnel-bench tcp`: raw TCP through a TCP tunnel (public
# port, front door) against direct, rathole and bore (bench/results/tcp.json).
#
# Any other flag goes to `tunnel-bench run` (see `--help` there).
#
# What it installs when missing:
#   - wrk, nginx and redis-server: Debian packages (apt-get);
#   - rathole 0.5.0 and bore-cli 0.6.0: `cargo install --root target/bench-peers` (once; a few
#     minutes). bore is installed --locked. rathole is not: its lock file pins `time` 0.3.29,
#     which no longer compiles with Rust 1.80 and later (E0282 in time's format parser), so
#     its dependencies are resolved afresh within the ranges its manifest allows.
# It builds tunnel-server and tunnel-client twice: as shipped, and with `--features
# alloc-count` (a counting allocator, for allocations per request) copied to
# target/dist/alloc-count/. perf (Debian: linux-perf), when present, counts syscalls and
# libc allocator calls per request.
set -euo pipefail

cd "$(dirname "$0")/.."

RATHOLE_VERSION=0.5.0
BORE_VERSION=0.6.0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} (Debian packages)" >&2
    $sudo apt-get update
    $sudo apt-get install -y "${missing[@]}"
fi

target_dir="${CARGO_TARGET_DIR:-target}"

# The tuned `dist` profile, as the shipped image builds (Cargo.toml; `release` is the quick
# local one). The shipped build last, so that target/dist/ holds it afterwards. Both stay
# cached (cargo keeps one artifact per feature set), so a second run builds nothing.
cargo build --profile dist --locked -p tunnel-server -p tunnel-client \
    --features tunnel-server/alloc-count,tunnel-client/alloc-count
mkdir -p "$target_dir/dist/alloc-count"
cp "$target_dir/dist/tunnel-server" "$target_dir/dist/tunnel-client" \
    "$target_dir/dist/alloc-count/"
cargo build --profile dist --locked -p tunnel-server -p tunnel-client -p tunnel-bench

peers="$target_dir/bench-peers"
if [ ! -x "$peers/bin/rathole" ]; then
    echo "installing rathole $RATHOLE_VERSION into $peers (once)" >&2
    # Only the plain TCP transport is measured: TLS (OpenSSL) and noise are left out.
    cargo install --root "$peers" "rathole@$RATHOLE_VERSION" \
        --no-default-features --features server,client
fi
if [ ! -x "$peers/bin/bore" ]; then
    echo "installing bore-cli $BORE_VERSION into $peers (once)" >&2
    cargo install --locked --root "$peers" "bore-cli@$BORE_VERSION"
fi

# Absolute: the processes are started in another working directory.
bins="$(cd "$target_dir/dist" && pwd)"
peer_bins="$(cd "$peers/bin" && pwd)"
work="$(cd "$target_dir" && pwd)/bench-work"

# 1,000 idle tunnels need as many sockets on both ends.
hard="$(ulimit -Hn)"
if [ "$hard" = "unlimited" ] || [ "$hard" -gt 8192 ]; then
    ulimit -n 8192
else
    ulimit -n "$hard"
fi

"$bins/tunnel-bench" run --bin-dir "$bins" --alloc-bin-dir "$bins/alloc-count" \
    --peers-dir "$peer_bins" --work-dir "$work" "$@"

# What the client's traffic inspector (on by default) costs: the same small requests through a
# client with it on and one with it off, interleaved (issue 16's target: within 10%).
inspect_args=(--rounds 5 --secs 5)
inspect_out="bench/results/inspect.json"
cluster_args=(--rounds 5 --secs 5 --download-mib 256 --recoveries 5)
cluster_out="bench/results/cluster.json"
for arg in "$@"; do
    case "$arg" in
        --quick)
            inspect_args=(--rounds 2 --secs 2)
            cluster_args=(--rounds 2 --secs 2 --download-mib 64 --recoveries 2)
            ;;
        --out=*|--out)  # a custom run: keep the committed files as they are
            inspect_out=""
            cluster_out=""
            ;;
    esac
done
echo
echo "== the traffic inspector on against off (tunnel-bench inspect ${inspect_args[*]})"
"$bins/tunnel-bench" inspect --bin-dir "$bins" "${inspect_args[@]}" \
    ${inspect_out:+--out "$inspect_out"}

# Several pods sharing a Redis (issue 15): small requests (wrk -t1 -c1 and -c16) and a download
# entering pod A, which holds the client, against entering pod B, which forwards to A, in
# interleaved rounds; then the time from `kill -9` of the pod holding a client to the first
# successful request through a third pod.
echo
echo "== several pods: same pod against cross pod, recovery after kill -9 (tunnel-bench cluster ${cluster_args[*]})"
"$bins/tunnel-bench" cluster --bin-dir "$bins" --work-dir "$work/cluster" "${cluster_args[@]}" \
    ${cluster_out:+--out "$cluster_out"}

# Raw TCP through a TCP tunnel, both ways in (its public port, the front door through
# `tunnel-client connect`), against the same service direct, through rathole and through bore:
# MB/s each way and connection set-up time (issue 17).
tcp_args=(--rounds 3 --mib 256 --connections 200)
tcp_out="bench/results/tcp.json"
for arg in "$@"; do
    case "$arg" in
        --quick) tcp_args=(--rounds 1 --mib 64 --connections 50) ;;
        --out=*|--out) tcp_out="" ;;  # a custom run: keep the committed file as it is
    esac
done
echo
echo "== raw TCP: tunnel (public port, front door) against direct, rathole, bore (tunnel-bench tcp ${tcp_args[*]})"
"$bins/tunnel-bench" tcp --bin-dir "$bins" --peers-dir "$peer_bins" --work-dir "$work/tcp" \
    "${tcp_args[@]}" ${tcp_out:+--out "$tcp_out"}
