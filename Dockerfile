# mupdated in a container: build with the Rust toolchain on Debian bookworm,
# run on bookworm-slim as an unprivileged user.
#   docker build -t mupdated .
#   docker run -p 3905:3905 -v mupdated-data:/var/lib/mupdated mupdated
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY protocol-tests ./protocol-tests
COPY conformance ./conformance
COPY examples ./examples
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN useradd --system --home-dir /var/lib/mupdated --create-home mupdated
COPY --from=build /src/target/release/mupdated /src/target/release/mupdatectl /usr/local/bin/
COPY examples/mupdated.toml /etc/mupdated/mupdated.toml
USER mupdated
WORKDIR /var/lib/mupdated
EXPOSE 3905
VOLUME ["/var/lib/mupdated"]
# The demo config listens on loopback; in a container listen on all addresses.
CMD ["mupdated", "--config", "/etc/mupdated/mupdated.toml", "--listen", "0.0.0.0:3905", "--data-dir", "/var/lib/mupdated/data"]
