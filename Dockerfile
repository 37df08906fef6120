# syntax=docker/dockerfile:1
# tokend: a static musl binary in an image with no shell and no package manager.
#   docker build -t tokend .
#   docker run --rm -v /etc/tokend:/etc/tokend:ro tokend -c /etc/tokend/tokend.toml

FROM rust:1.95-bookworm AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --target x86_64-unknown-linux-musl

# distroless/static: CA certificates, /etc/passwd with "nonroot" (65532), no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/tokend /usr/local/bin/tokend
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tokend", "run"]
