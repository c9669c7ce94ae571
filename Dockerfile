# syntax=docker/dockerfile:1
# One Dockerfile, one small image per service: `make images` builds every target, e.g.
#   docker build --target sequencer -t ghcr.io/verity-rollup/verity-sequencer:0.1.0 .
# The build stage compiles the workspace once (release profile); each final stage copies one
# binary onto distroless's cc image (glibc and libgcc, which MDBX and the Rust runtime need; no
# shell, no package manager) and runs as its `nonroot` user (uid/gid 65532).

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN} AS build
# libclang: bindgen for libmdbx's mdbx-sys. No protoc: protos compile with protox.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/verity target/release/verity-sequencer target/release/verity-ingress \
       target/release/verity-replica target/release/verity-gateway target/release/verity-prover \
       target/release/verity-autoscaler /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.source="https://github.com/verity-rollup/verity" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
WORKDIR /var/lib/verity

FROM runtime AS sequencer
COPY --from=build /out/verity-sequencer /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/verity-sequencer"]

FROM runtime AS ingress
COPY --from=build /out/verity-ingress /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/verity-ingress"]

FROM runtime AS replica
COPY --from=build /out/verity-replica /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/verity-replica"]

FROM runtime AS gateway
COPY --from=build /out/verity-gateway /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/verity-gateway"]

FROM runtime AS prover
COPY --from=build /out/verity-prover /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/verity-prover"]

FROM runtime AS autoscaler
COPY --from=build /out/verity-autoscaler /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/verity-autoscaler"]

# The operator's tool: `verity governance ...` (appointments), `verity bench` (load).
FROM runtime AS cli
COPY --from=build /out/verity /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/verity"]
