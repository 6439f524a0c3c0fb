#!/usr/bin/env bash
# Instructions per small request of tunnel-server and tunnel-client, counted by valgrind's
# callgrind: a figure that does not depend on how busy or how fast the machine is, so it
# compares builds, commits and settings where req/s cannot (other builds sharing the cores,
# another host of the same machine kind).
#
#   bench/instructions.sh                    # 5,000 requests after a warm-up of 1,000
#   bench/instructions.sh --requests 20000
#   bench/instructions.sh --backend ADDR     # through a backend of your own (e.g. nginx)
#   BIN_DIR=DIR bench/instructions.sh        # measure binaries built elsewhere (no build)
#
# The server runs as in bench/run.sh (JSON request log lines at info, metrics on, no public
# rate limit) and the client with --quiet; both inherit the caller's environment otherwise
# (RUST_LOG reaches the client). The backend is tunnel-bench's own. Needs valgrind.
set -euo pipefail

cd "$(dirname "$0")/.."

requests=5000
warm_up=1000
backend=""
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) requests="$2"; shift 2 ;;
        --warm-up) warm_up="$2"; shift 2 ;;
        --backend) backend="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
done

if ! command -v valgrind >/dev/null 2>&1; then
    echo "valgrind is needed (Debian package valgrind)" >&2
    exit 69
fi

if [ -z "${BIN_DIR:-}" ]; then
    cargo build --release --locked -p tunnel-server -p tunnel-client -p tunnel-bench
    BIN_DIR="${CARGO_TARGET_DIR:-target}/release"
fi
bins="$(cd "$BIN_DIR" && pwd)"
work="$(mktemp -d)"
pids=()
cleanup() {
    # Newest first, each waited for: the client leaves (deletes its tunnel) before its server.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill "${pids[i]}" 2>/dev/null || true
        wait "${pids[i]}" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# Polls `cmd` every 50 ms until it succeeds, for at most $1 seconds.
poll() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "timed out waiting for: $*" >&2
            return 1
        fi
        sleep 0.05
    done
}

if [ -z "$backend" ]; then
    "$bins/tunnel-bench" backend >"$work/backend.out" &
    pids+=($!)
    poll 10 grep -q listening "$work/backend.out"
    backend="$(sed -n 's/^listening //p' "$work/backend.out")"
fi

key="tunnel-bench-key-0123456789"
TUNNEL_BIND=127.0.0.1:0 TUNNEL_API_KEYS="$key" TUNNEL_PUBLIC_RATE_PER_SEC=0 \
    TUNNEL_METRICS_BIND=127.0.0.1:0 LOG_FORMAT=json RUST_LOG=info \
    valgrind --tool=callgrind --log-file="$work/server.vg" \
    --callgrind-out-file="$work/server.cg" "$bins/tunnel-server" 2>"$work/server.log" &
server_pid=$!
pids+=("$server_pid")
poll 60 grep -q '"listen"' "$work/server.log"
server="$(grep -o '"listen":"[^"]*"' "$work/server.log" | head -1 | cut -d'"' -f4)"

valgrind --tool=callgrind --log-file="$work/client.vg" \
    --callgrind-out-file="$work/client.cg" "$bins/tunnel-client" \
    --server "$server" --api-key "$key" --port "${backend##*:}" --local-host "${backend%:*}" \
    --name bench --quiet 2>"$work/client.log" &
client_pid=$!
pids+=("$client_pid")
poll 60 "$bins/tunnel-bench" load --to "$server" --path /bench/ --requests 1 --connections 1

"$bins/tunnel-bench" load --to "$server" --path /bench/ --requests "$warm_up" --connections 50 >/dev/null
callgrind_control -z "$server_pid" >/dev/null 2>&1
callgrind_control -z "$client_pid" >/dev/null 2>&1
"$bins/tunnel-bench" load --to "$server" --path /bench/ --requests "$requests" --connections 50 >&2
callgrind_control -d "$server_pid" >/dev/null 2>&1
callgrind_control -d "$client_pid" >/dev/null 2>&1

# Each dump holds the cost since the zeroing, all threads summed ("summary:" of the dump;
# thread-separated dumps are not asked for).
per_request() {
    local total
    total="$(cat "$work/$1".cg.* 2>/dev/null | awk '/^summary:/ { s += $2 } END { print s + 0 }')"
    awk -v t="$total" -v n="$requests" 'BEGIN { printf "%.0f", t / n }'
}
echo "instructions per request (callgrind, $requests requests, 50 connections, after $warm_up):"
echo "  tunnel-server: $(per_request server)"
echo "  tunnel-client: $(per_request client)"
