# Multi-stage build: a full Rust toolchain builds the binary, a slim Debian
# image runs it as an unprivileged user.
FROM rust:1-bookworm AS build
# Debian's package versions are not pinned: bookworm's security updates
# replace them, and a pinned version would stop the build.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Dependencies first, against stub sources: this layer is rebuilt only when
# Cargo.toml or Cargo.lock change, not on every source edit. Every target
# the manifest declares needs a stub file (the test suite checks the list).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches tests \
    && touch src/lib.rs \
    && for stub in src/main.rs benches/verify.rs benches/propagation.rs benches/fleet.rs tests/tests.rs; do \
         echo 'fn main() {}' > "$stub"; \
       done \
    && cargo build --release --locked --bin portcullis \
    && rm -rf src target/release/portcullis* target/release/deps/portcullis-* \
              target/release/deps/libportcullis-* target/release/.fingerprint/portcullis-*

# Then the crate itself; benches and tests stay stubs, the binary needs
# neither.
COPY src ./src
# The demo page serves the browser client from clients/js/index.js.
COPY clients/js/index.js ./clients/js/index.js
RUN cargo build --release --locked --bin portcullis

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 portcullis \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/portcullis --no-create-home \
       --shell /usr/sbin/nologin portcullis \
    && install -d -o portcullis -g portcullis -m 0700 /var/lib/portcullis
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
# Numeric, so a runtime can tell it is not root without the image's passwd.
USER 10001:10001
# The only writable place: a SQLite store belongs here
# (url = "sqlite:///var/lib/portcullis/portcullis.db"); the configuration
# under /etc/portcullis is mounted read-only.
WORKDIR /var/lib/portcullis
VOLUME ["/var/lib/portcullis"]
EXPOSE 8080 9090
# `portcullis admin health` asks the admin listener's /readyz and exits
# non-zero unless the gateway is ready (revocation view fresh, keys
# loaded), so compose's `service_healthy` waits for a gateway that can
# answer. PORTCULLIS_ADMIN_URL points it elsewhere.
ENV PORTCULLIS_ADMIN_URL=http://127.0.0.1:9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["portcullis", "admin", "health"]
ENTRYPOINT ["portcullis"]
CMD ["serve", "--config", "/etc/portcullis/portcullis.toml"]
