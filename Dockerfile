# syntax=docker/dockerfile:1
#
# splitway container image: a static-ish Rust binary on distroless (glibc, no shell, no curl).
#
#   docker build -t splitway .
#
# The image runs the example config/splitway.toml, baked in at /etc/splitway/splitway.toml.
# Ship your own config by building a tiny image on top of this one:
#
#   FROM splitway
#   COPY my-splitway.toml /etc/splitway/splitway.toml
#
# or by mounting a file there (Kubernetes ConfigMap, ECS bind mount / EFS volume), or by
# pointing SPLITWAY_CONFIG (or `run --config FILE`) elsewhere.
#
# Listen addresses: the example config listens on 127.0.0.1:3128 (proxy) and 127.0.0.1:9901
# (admin). That is right for a sidecar whose containers share one network namespace: ECS tasks
# in awsvpc mode (Fargate) and Kubernetes pods. Where the application runs in another network
# namespace (ECS bridge mode, `docker run -p 3128:3128`, a separate container on a Docker
# network) the proxy must listen on 0.0.0.0:3128 instead, and then anything that can reach the
# port can use the proxy: keep it on a private network. Kubelet probes hit the pod IP, so in
# Kubernetes the *admin* listener needs 0.0.0.0:9901 (see deploy/kubernetes/sidecar.yaml).

# ---- build ------------------------------------------------------------------------------------
# Bookworm to match the runtime's glibc (distroless cc-debian12).
FROM rust:1.95-bookworm AS builder
WORKDIR /build

# Dependencies first: this layer is reused until Cargo.toml or Cargo.lock changes. Cargo needs
# a target to read the manifest, so stub ones stand in for src/ while fetching.
# The [[test]] and [[bench]] targets give their `path` in Cargo.toml, so cargo does not look for
# their files here (an inferred path would make it demand them); keep it that way.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo fetch --locked \
    && rm -rf src

COPY src/ src/
# .ci/run replays this stage outside Docker: this stage's COPY list into a clean directory, its
# RUN lines verbatim (docs/testing.md says what that proves).
RUN cargo build --release --locked --bin splitway

# ---- iptables: the init container of transparent mode ----------------------------------------
#   docker build --target iptables -t splitway:iptables .
# The same binary beside the iptables tools (Debian's default, the nft backend), for the init
# container that runs `splitway iptables --apply` with NET_ADMIN before the pod's other
# containers start (deploy/kubernetes/transparent.yaml). The proxy itself stays on the image below.
FROM debian:bookworm-slim AS iptables
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /build/target/release/splitway /usr/local/bin/splitway
ENTRYPOINT ["/usr/local/bin/splitway"]
CMD ["iptables", "--apply"]

# ---- runtime ----------------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=builder /build/target/release/splitway /usr/local/bin/splitway
COPY config/splitway.toml /etc/splitway/splitway.toml
ENV SPLITWAY_CONFIG=/etc/splitway/splitway.toml

# nonroot (65532:65532), numeric so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532

# 3128: the proxy (HTTPS_PROXY); 9901: admin (/healthz, /readyz, /metrics).
EXPOSE 3128 9901

# Exec form: the image has no shell. `splitway health` GETs http://127.0.0.1:9901/healthz, which
# also reaches an admin listener bound to 0.0.0.0:9901. Docker (and Compose) run it; ECS and
# Kubernetes do not: they take theirs from deploy/ecs/task-definition.json and the probes in
# deploy/kubernetes/sidecar.yaml.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/splitway", "health"]

ENTRYPOINT ["/usr/local/bin/splitway"]
CMD ["run"]
