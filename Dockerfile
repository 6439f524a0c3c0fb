# Container image for tunnel-server (the entrypoint) and tunnel-client.
#
#   docker build -t tunnel-server:0.1.0 .
#   docker run --rm -p 8989:8989 -e TUNNEL_API_KEYS="$(openssl rand -hex 32)" tunnel-server:0.1.0
#   docker run --rm --entrypoint tunnel-client tunnel-server:0.1.0 --help
#
# Every setting is an environment variable; see .env.example and kubernetes-config.yaml.

# ---------------------------------------------------------------------------------------------
# Builder (the tuned `dist` profile of Cargo.toml, not the quick local `release`):
# dependencies first (cached until a Cargo.toml or Cargo.lock changes), then sources.
# ---------------------------------------------------------------------------------------------
FROM rust:1-slim-bookworm AS builder

WORKDIR /src

# Manifests only: the root (workspace and the `tunnel-e2e` package) and every member's; cargo
# refuses to load a workspace with a member missing, even one not built here (ci/check-
# dockerfile-layer.py fails CI when one is left out). The root package's library lives in
# tests/support/lib.rs; it is never built here but gets a stub like the others so that the tree
# is a complete workspace for any cargo command.
COPY Cargo.toml Cargo.lock ./
# Build settings: mimalloc's arenas committed on demand (CFLAGS), which the memory goals need.
COPY .cargo/config.toml .cargo/config.toml
COPY crates/tunnel-protocol/Cargo.toml crates/tunnel-protocol/Cargo.toml
COPY crates/tunnel-server/Cargo.toml crates/tunnel-server/Cargo.toml
COPY crates/tunnel-client/Cargo.toml crates/tunnel-client/Cargo.toml
COPY crates/tunnel-bench/Cargo.toml crates/tunnel-bench/Cargo.toml
COPY crates/tunnel-alloc-count/Cargo.toml crates/tunnel-alloc-count/Cargo.toml

# Stub sources: an empty lib per crate, so that this layer compiles all third-party
# dependencies and nothing of ours (the binaries' main.rs come with the real sources).
RUN mkdir -p tests/support \
    && touch tests/support/lib.rs \
    && for manifest in crates/*/Cargo.toml; do \
        mkdir -p "${manifest%Cargo.toml}src" && touch "${manifest%Cargo.toml}src/lib.rs"; \
    done \
    && cargo build --profile dist --locked -p tunnel-server -p tunnel-client

# Real sources. tests/ is not copied (tunnel-e2e is never built here; its stub stays). COPY
# keeps the files' own modification times, which may be older than the stubs just compiled, so
# touch them to make cargo rebuild our crates for sure.
COPY crates crates
RUN find crates -name '*.rs' -exec touch {} + \
    && cargo build --profile dist --locked -p tunnel-server -p tunnel-client \
    && cp target/dist/tunnel-server target/dist/tunnel-client /usr/local/bin/

# ---------------------------------------------------------------------------------------------
# Runtime: Debian slim (same glibc as the builder), no shell tools added, numeric non-root user.
# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim

# CA roots for tunnel-client (rustls with the platform's native roots, for wss:// servers).
# Taken from the builder, which installs ca-certificates, so the runtime needs no apt-get.
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /usr/local/bin/tunnel-server /usr/local/bin/tunnel-client /usr/local/bin/

# In a container the server must listen on all interfaces. It refuses to start on a
# non-loopback address without TUNNEL_API_KEYS, so an image run without keys fails loudly
# instead of serving an open control API.
ENV TUNNEL_BIND=0.0.0.0:8989
# Prometheus metrics on a port of their own (publish it only to the monitoring network).
ENV TUNNEL_METRICS_BIND=0.0.0.0:9090

# 65532 is the conventional "nonroot" uid/gid; kubernetes-config.yaml runs the pod as the same.
# The binaries write nothing to disk (logs go to stderr), so a read-only root filesystem works.
USER 65532:65532

EXPOSE 8989 9090

ENTRYPOINT ["/usr/local/bin/tunnel-server"]
