# syntax=docker/dockerfile:1
#
# The `mops` image: one binary that runs every service (`mops serve`) or one of them
# (`mops serve registry|attribution|indexer|query`), configured by MOPS_* environment variables.
#
#   docker build -t mops:dev .
#   docker run --rm -p 50051:50051 -p 9464:9464 mops:dev            # all services, embedded stores
#
# RUST_VERSION follows rust-toolchain.toml (scripts/validate-k8s.sh checks that they agree).

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
# The sources (.dockerignore leaves out build output, VCS data, deploy/ and scripts/). The whole
# tree rather than a list of crates, so a new workspace member needs no change here.
# rust-toolchain.toml is ignored too: the image already has the pinned toolchain, and the file's
# extra components (clippy, rustfmt) would make rustup download them.
# The build needs no protoc (protox compiles the protos) and no system libraries beyond the C
# compiler the slim Rust image has (ring, zstd).
COPY . .
# Cache mounts keep the crate registry and the target directory between builds, so a source change
# recompiles only our crates. The binary is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin mops \
 && install -D -m 0755 target/release/mops /out/mops

FROM debian:bookworm-slim
# ca-certificates: TLS to Azure Blob, S3, GCS and OTLP collectors.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 mops \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin mops \
 && install -d -o 10001 -g 10001 -m 0750 /data
COPY --from=builder /out/mops /usr/local/bin/mops
# Listen on every interface inside the container (the binary's defaults are loopback only).
# MODELOPS_HOME holds the embedded stores (registry, jobs, provenance, results) when no store URL is set.
# MIMALLOC_ARENA_RESERVE: mops' allocator reserves address space 64 MiB at a time instead of 1 GiB,
# so a container under an address-space cap (ulimit -v) keeps room for the system malloc that C
# libraries (zstd) use (docs/LIMITS.md).
ENV MOPS_LISTEN=0.0.0.0:50051 \
    MOPS_METRICS_LISTEN=0.0.0.0:9464 \
    MODELOPS_HOME=/data \
    MIMALLOC_ARENA_RESERVE=64MiB
WORKDIR /data
USER 10001:10001
# 50051: gRPC (services, grpc.health.v1, reflection). 9464: HTTP /metrics, /healthz and the dashboard.
EXPOSE 50051 9464
# mops is PID 1 without an init: it handles SIGTERM and SIGINT itself (health turns NOT_SERVING,
# work drains for MOPS_SHUTDOWN_GRACE_SECONDS, then it exits) and starts no child processes.
ENTRYPOINT ["mops"]
CMD ["serve"]
