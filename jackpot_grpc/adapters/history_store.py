"""All SQL of the metrics history: `system_metrics` and `request_rollups` (migration 0002).
(Its length is SQL text: writes, windows, trends, compaction and pruning of two tables.)

The server's sampler writes (async, through the service's pool); /metrics reads windows
(async); the CLI's trend report reads per-day figures (sync, an operator connection).
Every write and read sets a statement timeout for its own transaction, so a slow database
costs a bounded wait and never a stuck sampler or health endpoint. Every write's COMMIT is
bounded like the service's (adapters.commit_bound: past `commit_timeout` the connection is
closed, never cancelled, and CommitOutcomeUnknown raised), so a write never hangs while
commits are frozen (a synchronous standby gone) and a cancelled standby wait is never taken
for a success.

Percentiles across minutes, methods and processes: every rollup row stores the sparse
latency histogram of its calls (bucket index of
jackpot_grpc.observability.metrics.bucket_of → count).
The queries sum the counts of each bucket over the rows they select, which is exactly the
histogram of all those calls together, so a percentile read from it carries the same
±RELATIVE_ERROR (5 %) bound as one process's in-memory percentile; min and max are the
min and max over the rows, sums and counts add up. Nothing is averaged from averages.

Compaction: rows of a finished hour are merged into one row per method (`compacted`,
host and pid NULL) by the same summing, so nothing is lost but the minute detail and a
30-day read sums ~720 rows per method instead of ~43,200 per method and process.

Bucket indexes depend on metrics.MIN_MS and metrics.RELATIVE_ERROR: changing either needs
a migration that rewrites or drops the stored histograms.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from jackpot_grpc.adapters import advisory_locks
from jackpot_grpc.adapters.commit_bound import bounded_commit
from jackpot_grpc.observability.history_records import (
    Batch,
    Compaction,
    DayRequests,
    Rollup,
    SystemSample,
    WindowRead,
)
from jackpot_grpc.observability.metrics import Stats

AsyncConn = AsyncConnection[Any]
SyncConn = psycopg.Connection[Any]

SYSTEM_TABLE: Final = "system_metrics"
ROLLUP_TABLE: Final = "request_rollups"
AUDIT_TABLE: Final = "ledger_audits"  # the shared background audit's results (0007)
# Each table with the column its age is measured by (for pruning).
TIME_COLUMNS: Final = {
    SYSTEM_TABLE: "stat_timestamp",
    ROLLUP_TABLE: "started_at",
    AUDIT_TABLE: "audited_at",
}


INSERT_SAMPLE = """
    INSERT INTO system_metrics (stat_timestamp, host, pid, cpu_usage, memory_usage, rss_bytes,
                                connection_count, pool_waiting, pool_max)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
"""

INSERT_ROLLUP = """
    INSERT INTO request_rollups (started_at, seconds, host, pid, method, request_count,
                                 server_error_count, client_error_count, codes, sum_ms,
                                 min_ms, max_ms, hist_index, hist_count)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::smallint[], %s::bigint[])
"""

STORED_BATCHES = """
    SELECT stat_timestamp FROM system_metrics
    WHERE host = %s AND pid = %s AND stat_timestamp = ANY(%s)
"""

# One statement, so one snapshot: counts, codes and histogram agree with each other.
READ_WINDOW = """
    WITH r AS MATERIALIZED (
        SELECT method, started_at, codes, sum_ms, min_ms, max_ms, hist_index, hist_count
        FROM request_rollups
        WHERE started_at >= %(since)s
    ), totals AS (
        SELECT method, sum(sum_ms) AS sum_ms, min(min_ms) AS min_ms, max(max_ms) AS max_ms,
               min(started_at) AS earliest
        FROM r GROUP BY method
    ), codes AS (
        SELECT method, jsonb_object_agg(code, n) AS codes
        FROM (SELECT r.method, c.key AS code, sum(c.value::bigint)::bigint AS n
              FROM r, jsonb_each_text(r.codes) AS c
              GROUP BY 1, 2) AS by_code
        GROUP BY method
    ), hist AS (
        SELECT method, array_agg(i ORDER BY i) AS hist_index, array_agg(n ORDER BY i) AS hist_count
        FROM (SELECT r.method, h.i, sum(h.n)::bigint AS n
              FROM r, unnest(r.hist_index, r.hist_count) AS h(i, n)
              GROUP BY 1, 2) AS by_bucket
        GROUP BY method
    )
    SELECT t.method, t.sum_ms, t.min_ms, t.max_ms, t.earliest, c.codes, h.hist_index, h.hist_count
    FROM totals AS t JOIN codes AS c USING (method) JOIN hist AS h USING (method)
"""

# Per day in the session's time zone (as the runbook's date_trunc('day', ...) is).
DAILY_REQUESTS = """
    WITH r AS MATERIALIZED (
        SELECT date_trunc('day', started_at) AS day, request_count, server_error_count,
               client_error_count, sum_ms, min_ms, max_ms, hist_index, hist_count
        FROM request_rollups
        WHERE started_at >= %(since)s
    ), totals AS (
        SELECT day, sum(request_count)::bigint AS requests,
               sum(server_error_count)::bigint AS server_errors,
               sum(client_error_count)::bigint AS client_errors,
               sum(sum_ms) AS sum_ms, min(min_ms) AS min_ms, max(max_ms) AS max_ms
        FROM r GROUP BY day
    ), hist AS (
        SELECT day, array_agg(i ORDER BY i) AS hist_index, array_agg(n ORDER BY i) AS hist_count
        FROM (SELECT r.day, h.i, sum(h.n)::bigint AS n
              FROM r, unnest(r.hist_index, r.hist_count) AS h(i, n)
              GROUP BY 1, 2) AS by_bucket
        GROUP BY day
    )
    SELECT t.day, t.requests, t.server_errors, t.client_errors, t.sum_ms, t.min_ms, t.max_ms,
           h.hist_index, h.hist_count
    FROM totals AS t JOIN hist AS h USING (day)
    ORDER BY t.day
"""

# The runbook's capacity-review query, with a few more figures per day.
DAILY_SYSTEM = """
    SELECT date_trunc('day', stat_timestamp) AS day,
           avg(cpu_usage) AS avg_cpu, max(cpu_usage) AS max_cpu,
           avg(memory_usage) AS avg_memory, max(memory_usage) AS max_memory,
           avg(connection_count) AS avg_connections, max(pool_waiting) AS max_pool_waiting,
           max(rss_bytes) AS max_rss_bytes, count(*) AS samples,
           count(DISTINCT (host, pid)) AS processes
    FROM system_metrics
    WHERE stat_timestamp >= %(since)s
    GROUP BY day
    ORDER BY day
"""

# Small batches, each its own short transaction (SKIP LOCKED: never waits on a row).
PRUNE = {
    SYSTEM_TABLE: """
        DELETE FROM system_metrics
        WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM system_metrics WHERE stat_timestamp < %s
            LIMIT %s FOR UPDATE SKIP LOCKED))
    """,
    ROLLUP_TABLE: """
        DELETE FROM request_rollups
        WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM request_rollups WHERE started_at < %s
            LIMIT %s FOR UPDATE SKIP LOCKED))
    """,
    AUDIT_TABLE: """
        DELETE FROM ledger_audits
        WHERE id = ANY(ARRAY(
            SELECT id FROM ledger_audits WHERE audited_at < %s
            -- the newest result stays, however old: replicas report it
            AND id <> (SELECT max(id) FROM ledger_audits)
            LIMIT %s FOR UPDATE SKIP LOCKED))
    """,
}


# Replicas compact one at a time, and prune one at a time: transaction-scoped advisory
# locks on these keys (released by the commit: nothing held in the session, so they work
# behind PgBouncer in transaction mode too).
COMPACT_LOCK_KEY: Final = advisory_locks.COMPACT_METRICS
PRUNE_LOCK_KEY: Final = advisory_locks.PRUNE_METRICS


async def _try_xact_lock(conn: AsyncConn, key: int) -> bool:
    cursor = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,))
    locked = await cursor.fetchone()
    return locked is not None and bool(locked[0])


OLDEST_UNCOMPACTED = """
    SELECT min(started_at) FROM request_rollups WHERE NOT compacted AND started_at < %s
"""

# One statement: the hour's uncompacted rows are deleted and their sums inserted as one
# row per method, atomically. A row written late for an hour already compacted is merged
# by the next run into a second compacted row: rows only ever add up.
COMPACT_HOUR = """
    WITH gone AS (
        DELETE FROM request_rollups
        WHERE started_at >= %(start)s AND started_at < %(end)s AND NOT compacted
        RETURNING method, request_count, server_error_count, client_error_count, codes,
                  sum_ms, min_ms, max_ms, hist_index, hist_count
    ), totals AS (
        SELECT method, sum(request_count)::bigint AS request_count,
               sum(server_error_count)::bigint AS server_error_count,
               sum(client_error_count)::bigint AS client_error_count,
               sum(sum_ms) AS sum_ms, min(min_ms) AS min_ms, max(max_ms) AS max_ms
        FROM gone GROUP BY method
    ), codes AS (
        SELECT method, jsonb_object_agg(code, n) AS codes
        FROM (SELECT g.method, c.key AS code, sum(c.value::bigint)::bigint AS n
              FROM gone AS g, jsonb_each_text(g.codes) AS c
              GROUP BY 1, 2) AS by_code
        GROUP BY method
    ), hist AS (
        SELECT method, array_agg(i ORDER BY i) AS hist_index, array_agg(n ORDER BY i) AS hist_count
        FROM (SELECT g.method, h.i, sum(h.n)::bigint AS n
              FROM gone AS g, unnest(g.hist_index, g.hist_count) AS h(i, n)
              GROUP BY 1, 2) AS by_bucket
        GROUP BY method
    ), added AS (
        INSERT INTO request_rollups (started_at, seconds, host, pid, compacted, method,
                                     request_count, server_error_count, client_error_count,
                                     codes, sum_ms, min_ms, max_ms, hist_index, hist_count)
        SELECT %(start)s, %(seconds)s, NULL, NULL, true, t.method, t.request_count,
               t.server_error_count, t.client_error_count, c.codes, t.sum_ms, t.min_ms,
               t.max_ms, h.hist_index, h.hist_count
        FROM totals AS t JOIN codes AS c USING (method) JOIN hist AS h USING (method)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone) AS merged, (SELECT count(*) FROM added) AS added
"""

COMPACT_SECONDS: Final = 3600


def _timeout_ms(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))


async def _set_statement_timeout(conn: AsyncConn, seconds: float) -> None:
    await conn.execute("SELECT set_config('statement_timeout', %s, true)", (_timeout_ms(seconds),))


async def write_batches(
    conn: AsyncConn, batches: Sequence[Batch], *, statement_timeout: float, commit_timeout: float
) -> list[Batch]:
    """Insert the batches not stored yet, in one transaction; returns those inserted."""
    if not batches:
        return []
    async with bounded_commit(conn, commit_timeout) as committing, conn.transaction():
        await _set_statement_timeout(conn, statement_timeout)
        by_process: dict[tuple[str, int], list[datetime]] = {}
        for batch in batches:
            key = (batch.sample.host, batch.sample.pid)
            by_process.setdefault(key, []).append(batch.sample.stat_timestamp)
        stored: set[tuple[str, int, datetime]] = set()
        for (host, pid), stamps in by_process.items():
            cursor = await conn.execute(STORED_BATCHES, (host, pid, stamps))
            stored.update((host, pid, row[0]) for row in await cursor.fetchall())
        fresh = [
            b
            for b in batches
            if (b.sample.host, b.sample.pid, b.sample.stat_timestamp) not in stored
        ]
        async with conn.cursor() as cursor:
            await cursor.executemany(INSERT_SAMPLE, [_sample_params(b.sample) for b in fresh])
            rollups = [_rollup_params(b.sample, r) for b in fresh for r in b.rollups]
            if rollups:
                await cursor.executemany(INSERT_ROLLUP, rollups)
        committing()
    return fresh


def _sample_params(s: SystemSample) -> tuple[Any, ...]:
    return (
        s.stat_timestamp,
        s.host,
        s.pid,
        s.cpu_usage,
        s.memory_usage,
        s.rss_bytes,
        s.connection_count,
        s.pool_waiting,
        s.pool_max,
    )


def _rollup_params(s: SystemSample, r: Rollup) -> tuple[Any, ...]:
    return (
        r.started_at,
        r.seconds,
        s.host,
        s.pid,
        r.method,
        r.request_count,
        r.server_error_count,
        r.client_error_count,
        Jsonb(r.codes),
        r.sum_ms,
        r.min_ms,
        r.max_ms,
        r.hist_index,
        r.hist_count,
    )


def _stats(row: dict[str, Any], codes: dict[str, int]) -> Stats:
    return Stats.from_parts(
        codes=codes,
        sum_ms=float(row["sum_ms"] or 0.0),
        min_ms=row["min_ms"],
        max_ms=row["max_ms"],
        hist=zip(row["hist_index"], row["hist_count"], strict=True),
    )


async def read_window(conn: AsyncConn, since: datetime, *, statement_timeout: float) -> WindowRead:
    """Every process's rollups that start at or after `since`, summed per method."""
    async with conn.transaction():
        await _set_statement_timeout(conn, statement_timeout)
        async with conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(READ_WINDOW, {"since": since})
            rows = await cursor.fetchall()
    per_method = {row["method"]: _stats(row, row["codes"]) for row in rows}
    earliest = min((row["earliest"] for row in rows), default=None)
    return WindowRead(per_method, earliest)


async def prune_batch(
    conn: AsyncConn,
    table: str,
    before: datetime,
    limit: int,
    *,
    statement_timeout: float,
    commit_timeout: float,
) -> int | None:
    """Delete up to `limit` rows of `table` older than `before`, in one short transaction;
    None when another process holds the pruning lock (it is pruning now)."""
    async with bounded_commit(conn, commit_timeout) as committing, conn.transaction():
        await _set_statement_timeout(conn, statement_timeout)
        if not await _try_xact_lock(conn, PRUNE_LOCK_KEY):
            return None
        cursor = await conn.execute(PRUNE[table], (before, limit))
        committing()
        return max(cursor.rowcount, 0)


async def compact_oldest_hour(
    conn: AsyncConn, before: datetime, *, statement_timeout: float, commit_timeout: float
) -> Compaction | None:
    """Compact the oldest hour that has uncompacted rows starting before `before` (an hour
    boundary), in one transaction; None when there is none or another process holds the
    compaction lock."""
    async with bounded_commit(conn, commit_timeout) as committing, conn.transaction():
        await _set_statement_timeout(conn, statement_timeout)
        if not await _try_xact_lock(conn, COMPACT_LOCK_KEY):
            return None
        cursor = await conn.execute(OLDEST_UNCOMPACTED, (before,))
        row = await cursor.fetchone()
        oldest: datetime | None = None if row is None else row[0]
        if oldest is None:
            return None
        stamp = oldest.timestamp()
        hour = datetime.fromtimestamp(stamp - stamp % COMPACT_SECONDS, UTC)
        end = hour + timedelta(seconds=COMPACT_SECONDS)
        cursor = await conn.execute(
            COMPACT_HOUR, {"start": hour, "end": end, "seconds": COMPACT_SECONDS}
        )
        counts = await cursor.fetchone()
        committing()
    merged, added = (0, 0) if counts is None else (int(counts[0]), int(counts[1]))
    return Compaction(hour, merged, added)


# --- the trend report (sync: the CLI's operator connection) -----------------------------


def _number(value: Any) -> float | None:
    if value is None:
        return None
    return float(value) if isinstance(value, Decimal | int | float) else None


def daily_requests(conn: SyncConn, since: datetime) -> list[DayRequests]:
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(DAILY_REQUESTS, {"since": since})
        rows = cursor.fetchall()
    days = []
    for row in rows:
        requests = int(row["requests"])
        latency = _stats(row, {"OK": requests})  # the codes only carry the count here
        days.append(
            DayRequests(
                day=row["day"],
                requests=requests,
                server_errors=int(row["server_errors"]),
                client_errors=int(row["client_errors"]),
                latency=latency,
            )
        )
    return days


def daily_system(conn: SyncConn, since: datetime) -> list[dict[str, Any]]:
    """Per-day averages and peaks of system_metrics (the runbook's capacity review)."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(DAILY_SYSTEM, {"since": since})
        rows = cursor.fetchall()
    out = []
    for row in rows:
        out.append(
            {
                "day": row["day"],
                "avg_cpu": _number(row["avg_cpu"]),
                "max_cpu": _number(row["max_cpu"]),
                "avg_memory": _number(row["avg_memory"]),
                "max_memory": _number(row["max_memory"]),
                "avg_connections": _number(row["avg_connections"]),
                "max_pool_waiting": int(row["max_pool_waiting"] or 0),
                "max_rss_bytes": int(row["max_rss_bytes"] or 0),
                "samples": int(row["samples"]),
                "processes": int(row["processes"]),
            }
        )
    return out
