"""Metrics history: system samples and request rollups, with the indexes their readers use.

`system_metrics` is the table the runbook's monthly capacity review reads (stat_timestamp,
cpu_usage, memory_usage, connection_count): one row per process per sampler tick.
`request_rollups` holds, per process, sampler tick (a minute by default) and method, the
calls' counts and latency histogram (sparse: bucket indexes of jackpot_grpc.observability.metrics and
their counts), so percentiles over any span and any number of processes combine exactly by
summing buckets. Finished hours are compacted into one row per method (`compacted`, no
host/pid), which keeps a 30-day read to a few thousand rows. Both tables are pruned by age
(jackpot_grpc.adapters.history_store).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE system_metrics (
            stat_timestamp    timestamptz NOT NULL,
            host              text NOT NULL,
            pid               integer NOT NULL,
            -- Percent of one CPU used by the process since its previous sample (as top
            -- shows it: above 100 when it kept more than one core busy).
            cpu_usage         double precision NOT NULL,
            -- Resident memory of the process as a percent of the machine's physical memory.
            memory_usage      double precision NOT NULL,
            rss_bytes         bigint NOT NULL,
            -- Connections open in the process's database pool, callers waiting for one,
            -- and the pool's maximum.
            connection_count  integer NOT NULL,
            pool_waiting      integer NOT NULL,
            pool_max          integer NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX system_metrics_stat_timestamp ON system_metrics (stat_timestamp)")
    op.execute(
        """
        CREATE TABLE request_rollups (
            -- The interval this row covers: from started_at, for `seconds` (a minute,
            -- aligned on the minute, with the default sampler interval; an hour when
            -- compacted).
            started_at          timestamptz NOT NULL,
            seconds             real NOT NULL CHECK (seconds >= 0),
            -- The process that wrote the row; NULL once compacted (several processes).
            host                text,
            pid                 integer,
            compacted           boolean NOT NULL DEFAULT false,
            method              text NOT NULL,
            request_count       bigint NOT NULL CHECK (request_count > 0),
            server_error_count  bigint NOT NULL CHECK (server_error_count >= 0),
            client_error_count  bigint NOT NULL CHECK (client_error_count >= 0),
            -- Counts by final gRPC status-code name, e.g. {"OK": 118, "INVALID_ARGUMENT": 2}.
            codes               jsonb NOT NULL,
            sum_ms              double precision NOT NULL,
            min_ms              double precision NOT NULL,
            max_ms              double precision NOT NULL,
            -- Sparse latency histogram: bucket indexes (jackpot_grpc.observability.metrics.bucket_of)
            -- and the number of calls in each.
            hist_index          smallint[] NOT NULL,
            hist_count          bigint[] NOT NULL,
            CHECK (cardinality(hist_index) = cardinality(hist_count))
        )
        """
    )
    op.execute("CREATE INDEX request_rollups_started_at ON request_rollups (started_at)")
    # Finds the rows still to compact without reading the compacted ones.
    op.execute(
        "CREATE INDEX request_rollups_uncompacted ON request_rollups (started_at)"
        " WHERE NOT compacted"
    )


def downgrade() -> None:
    op.execute("DROP TABLE request_rollups")
    op.execute("DROP TABLE system_metrics")
