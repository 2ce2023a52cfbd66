# syntax=docker/dockerfile:1
# The cronfleet image: one static-ish binary on Debian slim, run as a non-root user.
#
#   docker build -t cronfleet:dev .
#   docker run --rm cronfleet:dev --help
#
# The same image runs every role: `coordinator`, `worker`, `dev` and the client commands.
# The worker's `shell` handler runs scripts with /bin/sh from this image: jobs that need
# more tools (curl, psql, …) want an image built FROM this one with those tools added.
# Checked without a Docker engine by scripts/validate-deploy (hadolint, and that every
# file copied exists and is not excluded by .dockerignore).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Every workspace member must be here for cargo to load the workspace.
COPY Cargo.toml Cargo.lock ./
COPY proto ./proto
COPY crates ./crates
COPY tests ./tests
# etcd-client's build script compiles etcd's .proto files with protoc: the one shipped in
# the protoc-bin-vendored package, with its includes (crates/protoc prints where), so
# the image needs no system protoc (our own .proto files are compiled with protox).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    eval "$(cargo run --locked -q -p cronfleet-protoc)" \
    && cargo build --release --locked -p cronfleet-cli \
    && install -m 0755 target/release/cronfleet /usr/local/bin/cronfleet

FROM debian:${DEBIAN_RELEASE}-slim
# CA certificates for TLS to PostgreSQL, etcd, OTLP collectors and `http` jobs.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cronfleet \
    && useradd --system --uid 10001 --gid cronfleet --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin cronfleet
COPY --from=build /usr/local/bin/cronfleet /usr/local/bin/cronfleet
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# gRPC (coordinator), HTTP /healthz /readyz (coordinator), HTTP probes (worker).
EXPOSE 50051 8080 8081
ENTRYPOINT ["cronfleet"]
CMD ["--help"]
