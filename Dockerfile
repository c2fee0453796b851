# syntax=docker/dockerfile:1
# Build: Swift 6 toolchain with the C headers the project links against.
FROM swift:6.1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl-dev libpq-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependency resolution in its own layer: it changes only with Package.swift.
COPY Package.swift ./
RUN swift package resolve
COPY Sources ./Sources
RUN swift build -c release --static-swift-stdlib --product ingest \
    && swift build -c release --static-swift-stdlib --product vault

# Runtime: only the shared libraries the binaries need.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 libpq5 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app
USER 10001

FROM runtime AS vault
COPY --from=build /src/.build/release/vault /usr/local/bin/vault
ENTRYPOINT ["vault"]

FROM runtime AS ingest
COPY --from=build /src/.build/release/ingest /usr/local/bin/ingest
ENTRYPOINT ["ingest"]
CMD ["run"]
