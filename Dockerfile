# Container image for tunnel-server (the entrypoint) and tunnel-client.
#
#   docker build -t tunnel-server:0.1.0 .
#   docker run --rm -p 8989:8989 -e TUNNEL_API_KEYS="$(openssl rand -hex 32)" tunnel-server:0.1.0
#   docker run --rm --entrypoint tunnel-client tunnel-server:0.1.0 --help
#
# Every setting is an environment variable; see .env.example and kubernetes-config.yaml.

# ---------------------------------------------------------------------------------------------
# Builder: dependencies first (cached until a Cargo.toml or Cargo.lock changes), then sources.
# ---------------------------------------------------------------------------------------------
FROM rust:1-slim-bookworm AS builder

WORKDIR /src

# Manifests only. The root Cargo.toml is both the workspace and the `tunnel-e2e` package, whose
# library lives in tests/support/lib.rs. That package is never built here, and current cargo
# loads the workspace without the file, but it gets a stub like the others so that the tree is
# a complete workspace for any cargo command.
COPY Cargo.toml Cargo.lock ./
COPY crates/tunnel-protocol/Cargo.toml crates/tunnel-protocol/Cargo.toml
COPY crates/tunnel-server/Cargo.toml crates/tunnel-server/Cargo.toml
COPY crates/tunnel-client/Cargo.toml crates/tunnel-client/Cargo.toml

# Stub sources: an empty lib and a `fn main() {}` per crate, so that this layer compiles all
# third-party dependencies and nothing of ours.
RUN mkdir -p tests/support \
        crates/tunnel-protocol/src crates/tunnel-server/src crates/tunnel-client/src \
    && touch tests/support/lib.rs \
        crates/tunnel-protocol/src/lib.rs crates/tunnel-server/src/lib.rs crates/tunnel-client/src/lib.rs \
    && echo 'fn main() {}' > crates/tunnel-server/src/main.rs \
    && echo 'fn main() {}' > crates/tunnel-client/src/main.rs \
    && cargo build --release --locked -p tunnel-server -p tunnel-client

# Real sources. tests/ is not copied (tunnel-e2e is never built here; its stub stays). COPY
# keeps the files' own modification times, which may be older than the stubs just compiled, so
# touch them to make cargo rebuild our crates for sure.
COPY crates crates
RUN find crates -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p tunnel-server -p tunnel-client \
    && cp target/release/tunnel-server target/release/tunnel-client /usr/local/bin/

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
