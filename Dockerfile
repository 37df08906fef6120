# syntax=docker/dockerfile:1
# A static musl binary in an image with no shell and no package manager.

FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --target x86_64-unknown-linux-musl \
    && cp target/x86_64-unknown-linux-musl/release/tokend /tokend

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /tokend /usr/local/bin/tokend
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tokend"]
CMD ["run", "-c", "/etc/tokend/tokend.toml"]
