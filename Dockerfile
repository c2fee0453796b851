# syntax=docker/dockerfile:1
#
# Two images from one build:
#   docker build --target ingest -t pseudonymizer-ingest .   the service (no recovery tool inside)
#   docker build --target vault  -t pseudonymizer-vault  .   compliance tool and rotation jobs
# No keys are baked in: mount them (see keys/README.md for who gets which file).

ARG SWIFT_VERSION=6.2
# The release (it must match `vault --version`; scripts/container-test checks)
# and the source revision (CI passes `git rev-parse --short HEAD`).
ARG VERSION=0.11.0
ARG REVISION=unknown

# --- build: Swift toolchain plus the C headers the project links against ---
FROM swift:${SWIFT_VERSION}-bookworm AS build
# Unpinned on purpose: Debian's security updates replace these versions, and a
# pin would break the build the day they do.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl-dev libpq-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependency resolution in its own layer: it reruns only when Package.swift changes.
COPY Package.swift ./
RUN swift package resolve
# Tests/ is needed only because the manifest declares the test targets.
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --static-swift-stdlib --product ingest \
    && swift build -c release --static-swift-stdlib --product vault \
    && mkdir -p /out \
    && install -m 0755 -s "$(swift build -c release --show-bin-path)/ingest" /out/ingest \
    && install -m 0755 -s "$(swift build -c release --show-bin-path)/vault" /out/vault
# vault's man page (argument-parser's generate-manual, built from the resolved
# checkout) and its shell completions, for the compliance image.
RUN swift build -c release --package-path .build/checkouts/swift-argument-parser --product generate-manual \
    && mkdir -p /out/man /out/completions \
    && .build/checkouts/swift-argument-parser/.build/release/generate-manual /out/vault --output-directory /out/man \
    && /out/vault --generate-completion-script bash >/out/completions/vault.bash \
    && /out/vault --generate-completion-script zsh >/out/completions/_vault \
    && /out/vault --generate-completion-script fish >/out/completions/vault.fish

# --- runtime: only the shared libraries the binaries load, an unprivileged user ---
FROM debian:bookworm-slim AS runtime
ARG VERSION
ARG REVISION
# The key directories exist in the image, owned by the app user, because an
# empty named volume mounted on them takes that owner (compose's keys job
# writes /app/keys and hands ingest its two files in /app/ingest-keys).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 libpq5 ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /app/keys /app/ingest-keys \
    && chown app:app /app/keys /app/ingest-keys
WORKDIR /app
LABEL org.opencontainers.image.title="pseudonymizer" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
ENV KEYS_DIR=/app/keys \
    PSEUDONYMIZER_REVISION=${REVISION}
USER 10001:10001

# --- vault: compliance tool and the rotation jobs (CronJobs) ---
FROM runtime AS vault
COPY --from=build /out/vault /usr/local/bin/vault
COPY --from=build /out/man/vault.1 /usr/local/share/man/man1/vault.1
COPY --from=build /out/completions/vault.bash /usr/share/bash-completion/completions/vault
COPY --from=build /out/completions/_vault /usr/local/share/zsh/site-functions/_vault
COPY --from=build /out/completions/vault.fish /usr/share/fish/vendor_completions.d/vault.fish
ENTRYPOINT ["vault"]
CMD ["--help"]

# --- ingest: the service; the last stage, so a plain `docker build` makes it ---
FROM runtime AS ingest
COPY --from=build /out/ingest /usr/local/bin/ingest
ENV INGEST_HTTP_PORT=8080 \
    LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["ingest", "health", "--check", "live"]
ENTRYPOINT ["ingest"]
CMD ["run"]
