#!/usr/bin/env bash
# Memory of `tunnel-client start --all` per extra tunnel (issue 17): the client's resident
# set with 1 tunnel and with N, every tunnel online and idle, against a local tunnel-server.
# Each tunnel has a connection of its own (see README "Config file"), so this is the cost
# of one more WebSocket, HTTP client and session.
#
#   bench/client-memory.sh              # release build, N=10
#   PROFILE=debug N=20 bench/client-memory.sh
#
# Prints one line per run: tunnels, VmRSS (KiB), and at the end the difference per tunnel.
set -euo pipefail

cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
N=${N:-10}
if [ "$PROFILE" = release ]; then
    cargo build --release -q -p tunnel-server -p tunnel-client
else
    cargo build -q -p tunnel-server -p tunnel-client
fi
bin=target/$PROFILE
work=$(mktemp -d)
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

key=client-memory-key-0123456789
port=$(free_port)
"$bin/tunnel-server" --api-keys "$key" --bind "127.0.0.1:$port" --metrics-bind off \
    >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 200); do
    curl -fs "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 0.05
done
if ! curl -fs "http://127.0.0.1:$port/health" >/dev/null; then
    echo "tunnel-server did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
fi

# RSS (KiB) of a client running $1 tunnels, once its banner lists them all online.
measure() {
    local n=$1 file="$work/tunnel-$1.toml" out="$work/client-$1.log"
    printf '[client]\nserver = "127.0.0.1:%s"\napi_key = "%s"\nquiet = true\n' "$port" "$key" >"$file"
    for i in $(seq "$n"); do
        # Nothing listens on the local port: idle tunnels need no local service.
        printf '\n[[tunnels]]\nname = "mem-%s"\nlocal = 9\n' "$i" >>"$file"
    done
    "$bin/tunnel-client" start --all --no-watch --config "$file" >"$out" 2>&1 &
    local pid=$!
    for _ in $(seq 400); do
        [ "$(grep -c "/mem-[0-9]*/ -> " "$out" || true)" -ge "$n" ] && break
        sleep 0.05
    done
    if [ "$(grep -c "/mem-[0-9]*/ -> " "$out" || true)" -lt "$n" ]; then
        echo "not all $n tunnels came online:" >&2
        cat "$out" >&2
        exit 1
    fi
    local rss
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
    kill -TERM "$pid"
    wait "$pid" || true
    echo "$rss"
}

one=$(measure 1)
many=$(measure "$N")
echo "tunnels=1 rss_kib=$one"
echo "tunnels=$N rss_kib=$many"
echo "per_extra_tunnel_kib=$(( (many - one) / (N - 1) ))"
