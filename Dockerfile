# syntax=docker/dockerfile:1
# Multi-stage build: the same `cargo build` command as .ci/run (a test keeps them equal).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p proxy-checker

# Small runtime: Debian slim (glibc, CA roots for HTTPS sources, curl for the health check).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/proxy-checker --create-home proxy-checker
COPY --from=build /src/target/release/proxy-checker /usr/local/bin/proxy-checker
COPY deploy/docker/config.json /etc/proxy-checker/config.json
USER proxy-checker
WORKDIR /var/lib/proxy-checker
# Snapshots (file/SQLite store) and the generated API key live here.
VOLUME ["/var/lib/proxy-checker"]
EXPOSE 8080
# One socket per check in flight: run with `--ulimit nofile=65535:65535` (compose sets it);
# the service clamps its concurrency to whatever limit it gets and logs the value.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["/usr/local/bin/proxy-checker"]
CMD ["serve", "--config", "/etc/proxy-checker/config.json"]
