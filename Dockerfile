# syntax=docker/dockerfile:1
# The jackpot service image: `jackpot serve` (gRPC :50051, health/metrics :3001) by default;
# the same image runs the REST gateway (:3000) and every operator command.
#
#   docker build -t jackpot .
#   docker run --rm -e DATABASE_URL=postgresql://user:pass@db:5432/jackpot jackpot jackpot migrate
#   docker run -d --read-only -e DATABASE_URL=... -p 50051:50051 -p 3001:3001 jackpot
#   docker run -d --read-only -e JACKPOT_GRPC_TARGET=serve:50051 -p 3000:3000 jackpot jackpot gateway
#
# Built from the wheel and requirements.lock (every dependency pinned, with hashes); the
# source tree is not in the image. Migrations are their own step (`jackpot migrate`, safe
# to run concurrently); `serve` does not migrate unless JACKPOT_MIGRATE_ON_START=1. There is
# no embedded PostgreSQL here: without DATABASE_URL every command refuses to start.
# Writes go only to the declared volumes (logs, backups, /tmp), so `--read-only` works.

# python:3.11-slim-bookworm (Python 3.11.16), the multi-arch index digest. To move to a newer
# one: `docker buildx imagetools inspect python:3.11-slim-bookworm`, and use its digest.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY pyproject.toml setup.py README.md requirements.lock ./
COPY generated ./generated
COPY jackpot_grpc ./jackpot_grpc
COPY migrations ./migrations
RUN pip wheel --no-deps --wheel-dir /build/dist .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="jackpot-service" \
      org.opencontainers.image.description="Progressive jackpot service: gRPC, REST gateway, PostgreSQL ledger"
# pg_dump/pg_restore for `jackpot backup` (Debian bookworm's: PostgreSQL 15; they dump servers
# up to 15 — for a newer server install that major's client from the PostgreSQL apt repository).
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 jackpot \
    && useradd --system --uid 10001 --gid jackpot --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin jackpot \
    && mkdir -p /var/log/jackpot /var/backups/jackpot \
    && chown jackpot:jackpot /var/log/jackpot /var/backups/jackpot
# The lock first (hash-checked, nothing unpinned), then the wheel alone; the builder's files
# are mounted for this step only, so neither the wheel nor the lock stays in a layer.
RUN --mount=type=bind,from=builder,source=/build,target=/build \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
       --require-hashes -r /build/requirements.lock \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
       --no-deps /build/dist/jackpot_grpc-*.whl \
    && /opt/venv/bin/jackpot --help > /dev/null
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GRPC_PORT=50051 \
    REST_PORT=3000 \
    HEALTH_PORT=3001 \
    JACKPOT_LOG_DIR=/var/log/jackpot \
    JACKPOT_BACKUP_DIR=/var/backups/jackpot \
    JACKPOT_CLIENTS_FILE=/var/lib/jackpot/clients.json
# Clients configured (docs/SECURITY.md): every call needs a client's credentials, so the
# ports may listen on every interface. Add one: `docker exec jackpot jackpot clients add ...`.
VOLUME ["/var/log/jackpot", "/var/backups/jackpot", "/var/lib/jackpot", "/tmp"]
WORKDIR /tmp
USER 10001:10001
EXPOSE 50051 3000 3001
# grpc.health.v1 answers SERVING only while the database does; NOT_SERVING during shutdown.
# With TLS on the gRPC port (GRPC_TLS_CERT/KEY), also set GRPC_TLS_CA so the check connects.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD jackpot health --grpc-only --grpc-target "localhost:${GRPC_PORT}" --timeout 3 || exit 1
STOPSIGNAL SIGTERM
CMD ["jackpot", "serve"]
