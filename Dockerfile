# The presence service: `docker build -t presence .` at the repository root.
#
# The base images are build arguments, so a machine that cannot pull them can
# build from local stand-ins (scripts/image-bases makes them; CI builds with
#   docker build $(scripts/image-bases) -t presence .
# ). The defaults are the official images.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

# --- build ---
FROM ${RUST_IMAGE} AS build
# The image's binary carries no debug info (symbols stay, so a backtrace still
# names functions): 12 MB instead of 57 MB with the line tables of the
# release profile, and less to compile.
ENV CARGO_PROFILE_RELEASE_DEBUG=none \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo
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
FROM ${DEBIAN_IMAGE}
# One package added: ca-certificates, the roots that webhook deliveries to
# https endpoints are checked against (the health check is a bash script,
# and bash is in every Debian image).
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends ca-certificates >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 presence \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin presence \
    && install -d -o 10001 -g 10001 -m 700 /var/lib/presence
COPY --from=build /src/target/release/presence /usr/local/bin/presence
COPY deploy/healthcheck /usr/local/bin/presence-healthcheck
# A numeric user, so that runtimes can see it is not root.
USER 10001:10001
# JWT_SECRET has no default: set it (`-e JWT_SECRET=...`, at least 32 bytes).
ENV LISTEN_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json
EXPOSE 8080
# GET /healthz on LISTEN_ADDR's port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/presence-healthcheck"]
# SIGTERM closes open streams, drains in-flight requests for up to 10 s,
# saves the snapshot (with STATE_FILE, e.g. /var/lib/presence/state.json on a
# volume mounted at /var/lib/presence), then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/presence"]
CMD ["serve"]
