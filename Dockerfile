# syntax=docker/dockerfile:1

# --- build ---
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
# Embedded in the binary at build time (include_str!): the dashboard, the
# browser client and the demo page.
COPY dashboard ./dashboard
COPY clients/js/presence-client.js ./clients/js/presence-client.js
COPY clients/js/demo ./clients/js/demo
# Make sure cargo sees the real sources as newer than the stub build.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

# --- run ---
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin presence \
    && install -d -o presence -m 700 /var/lib/presence
COPY --from=build /src/target/release/presence /usr/local/bin/presence
USER presence
ENV LISTEN_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz >/dev/null || exit 1
# SIGTERM drains in-flight requests for up to 10 s, saves the snapshot (with
# STATE_FILE, e.g. /var/lib/presence/state.json on a volume), then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/presence"]
CMD ["serve"]
