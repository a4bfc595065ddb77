"""The runbook's PostgreSQL queries (pg_stat_activity, pg_locks, pg_stat_statements, ...).

Read-only except `terminate`. Every value is a bound parameter; only identifiers from the
fixed lists below are composed into SQL, through psycopg.sql.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from jackpot_grpc.adapters.database import OpsConn
from jackpot_grpc.adapters.ops_connection import one, rows
from jackpot_grpc.text.messages import first_line

# The service's tables (migrations/versions): what reports and restores look at.
TABLES = ("jackpots", "contributions", "wins", "seed_fundings", "config_audit", "pool_lifecycle")
JACKPOT_APPLICATIONS = "%jackpot%"
MEMORY_SETTINGS = ("shared_buffers", "work_mem", "maintenance_work_mem", "effective_cache_size")
# pg_stat_statements rows about the service: statements touching one of its tables.
STATEMENT_PATTERN = r"\m(" + "|".join(TABLES) + r")\M"


def server_info(conn: OpsConn) -> dict[str, Any]:
    return one(
        conn,
        """SELECT current_setting('server_version') AS server_version,
                  current_setting('server_version_num')::int AS server_version_num,
                  current_database() AS database,
                  current_user AS "user",
                  pg_database_size(current_database()) AS database_size_bytes,
                  pg_size_pretty(pg_database_size(current_database())) AS database_size,
                  current_setting('max_connections')::int AS max_connections,
                  date_trunc('second', now() - pg_postmaster_start_time()) AS server_uptime,
                  pg_is_in_recovery() AS in_recovery""",
    )


def server_major(conn: OpsConn) -> int:
    return int(one(conn, "SELECT current_setting('server_version_num')::int AS v")["v"]) // 10000


def connections_by_state(conn: OpsConn, application_like: str | None) -> list[dict[str, Any]]:
    """Client connections to this database by state (the runbook's pool query)."""
    return rows(
        conn,
        """SELECT coalesce(state, 'unknown') AS state,
                  count(*) AS connections,
                  date_trunc('second', max(now() - state_change)) AS max_idle_time
           FROM pg_stat_activity
           WHERE backend_type = 'client backend'
             AND datname = current_database()
             AND pid <> pg_backend_pid()
             AND (%(app)s::text IS NULL OR application_name LIKE %(app)s::text)
           GROUP BY 1 ORDER BY 1""",
        {"app": application_like},
    )


def connection_usage(conn: OpsConn) -> dict[str, Any]:
    """Client connections on the whole server against max_connections."""
    usage = one(
        conn,
        """SELECT count(*) FILTER (WHERE backend_type = 'client backend') AS server_connections,
                  count(*) FILTER (WHERE backend_type = 'client backend'
                                   AND datname = current_database()
                                   AND application_name LIKE %(app)s::text
                                   AND pid <> pg_backend_pid()) AS jackpot_connections,
                  current_setting('max_connections')::int AS max_connections,
                  current_setting('superuser_reserved_connections')::int AS reserved_connections
           FROM pg_stat_activity""",
        {"app": JACKPOT_APPLICATIONS},
    )
    usable = max(1, usage["max_connections"] - usage["reserved_connections"])
    usage["used_percent"] = round(100.0 * usage["server_connections"] / usable, 1)
    return usage


def locks(conn: OpsConn) -> list[dict[str, Any]]:
    return rows(
        conn,
        """SELECT locktype, mode, granted, count(*) AS count
           FROM pg_locks WHERE pid IS DISTINCT FROM pg_backend_pid()
           GROUP BY locktype, mode, granted
           ORDER BY granted, count DESC, locktype, mode""",
    )


def blocked(conn: OpsConn) -> list[dict[str, Any]]:
    """Sessions waiting on a lock, and who holds it."""
    return rows(
        conn,
        """SELECT pid, pg_blocking_pids(pid) AS blocked_by, datname AS database,
                  application_name, date_trunc('second', now() - query_start) AS waiting,
                  left(query, 200) AS query
           FROM pg_stat_activity
           WHERE cardinality(pg_blocking_pids(pid)) > 0
           ORDER BY waiting DESC""",
    )


def long_running(conn: OpsConn, seconds: float, *, this_database: bool) -> list[dict[str, Any]]:
    """Statements running (or transactions open) for longer than `seconds`."""
    return rows(
        conn,
        """SELECT pid, datname AS database, usename AS "user", application_name, state,
                  date_trunc('second', now() - query_start) AS duration,
                  wait_event_type, wait_event, left(query, 200) AS query
           FROM pg_stat_activity
           WHERE backend_type = 'client backend'
             AND state IS DISTINCT FROM 'idle'
             AND query_start < now() - make_interval(secs => %(seconds)s)
             AND pid <> pg_backend_pid()
             AND (NOT %(this_db)s OR datname = current_database())
           ORDER BY duration DESC""",
        {"seconds": seconds, "this_db": this_database},
    )


def terminate(conn: OpsConn, pids: list[int]) -> dict[int, bool]:
    found = rows(
        conn,
        "SELECT pid, pg_terminate_backend(pid) AS terminated FROM unnest(%s::int[]) AS pid",
        (pids,),
    )
    return {r["pid"]: bool(r["terminated"]) for r in found}


def memory_settings(conn: OpsConn) -> list[dict[str, Any]]:
    return rows(
        conn,
        """SELECT name, current_setting(name) AS value, setting, unit
           FROM pg_settings WHERE name = ANY(%s) ORDER BY name""",
        (list(MEMORY_SETTINGS),),
    )


def current_revision(conn: OpsConn) -> str | None:
    if one(conn, "SELECT to_regclass('alembic_version') IS NOT NULL AS present")["present"]:
        found = rows(conn, "SELECT version_num FROM alembic_version")
        return str(found[0]["version_num"]) if found else None
    return None


@dataclass
class StatementStats:
    status: str  # "ok", "not installed", "not loaded"
    detail: str = ""
    top: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def statements(conn: OpsConn, limit: int = 10) -> StatementStats:
    """Top statements on the service's tables by total time, when pg_stat_statements is there."""
    ext = rows(conn, "SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'")
    if not ext:
        return StatementStats(
            "not installed",
            "CREATE EXTENSION pg_stat_statements (and shared_preload_libraries) to see queries",
        )
    # PostgreSQL 13 renamed total_time/mean_time/stddev_time to *_exec_time.
    columns = {
        r["attname"]
        for r in rows(
            conn,
            """SELECT attname FROM pg_attribute
               WHERE attrelid = to_regclass('pg_stat_statements') AND NOT attisdropped""",
        )
    }
    suffix = "_exec_time" if "total_exec_time" in columns else "_time"
    total, mean, stddev = (
        sql.Identifier(f"{kind}{suffix}") for kind in ("total", "mean", "stddev")
    )
    where = sql.SQL(
        "dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND query ~* %(pattern)s"
    )
    top_query = sql.SQL(
        """SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 160) AS query, calls,
                  round({total}::numeric, 2) AS total_ms, round({mean}::numeric, 3) AS mean_ms,
                  round({stddev}::numeric, 3) AS stddev_ms, rows,
                  round(100.0 * shared_blks_hit
                        / nullif(shared_blks_hit + shared_blks_read, 0), 2) AS hit_percent
           FROM pg_stat_statements WHERE {where}
           ORDER BY {total} DESC LIMIT %(limit)s"""
    ).format(total=total, mean=mean, stddev=stddev, where=where)
    summary_query = sql.SQL(
        """SELECT count(*) AS statements, coalesce(sum(calls), 0) AS total_calls,
                  round(avg({mean})::numeric, 3) AS avg_mean_ms,
                  count(*) FILTER (WHERE {mean} > 100) AS slow_statements_over_100ms
           FROM pg_stat_statements WHERE {where}"""
    ).format(mean=mean, where=where)
    params = {"pattern": STATEMENT_PATTERN, "limit": limit}
    try:
        top = rows(conn, top_query, params)
        summary = one(conn, summary_query, params)
    except psycopg.errors.ObjectNotInPrerequisiteState as exc:
        return StatementStats("not loaded", first_line(exc))
    return StatementStats("ok", f"pg_stat_statements {ext[0]['extversion']}", top, summary)


def index_usage(conn: OpsConn) -> list[dict[str, Any]]:
    return rows(
        conn,
        """SELECT relname AS "table", indexrelname AS index, idx_scan, idx_tup_read,
                  idx_tup_fetch, pg_size_pretty(pg_relation_size(indexrelid)) AS size,
                  idx_scan = 0 AS unused
           FROM pg_stat_user_indexes
           WHERE schemaname = current_schema() AND relname = ANY(%s)
           ORDER BY relname, idx_scan DESC, indexrelname""",
        (list(TABLES),),
    )


def existing_tables(conn: OpsConn, names: Sequence[str]) -> list[str]:
    """Those of `names` that exist in the current schema (a database at an older revision
    lacks the newer tables), in the order given."""
    found = rows(conn, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    present = {r["tablename"] for r in found}
    return [name for name in names if name in present]


def table_stats(conn: OpsConn, tables: Sequence[str] = TABLES) -> list[dict[str, Any]]:
    return rows(
        conn,
        """SELECT relname AS "table", n_live_tup AS live_rows, n_dead_tup AS dead_rows,
                  pg_size_pretty(pg_total_relation_size(relid)) AS total_size,
                  pg_total_relation_size(relid) AS total_bytes,
                  greatest(last_vacuum, last_autovacuum) AS last_vacuum,
                  greatest(last_analyze, last_autoanalyze) AS last_analyze
           FROM pg_stat_user_tables
           WHERE schemaname = current_schema() AND relname = ANY(%s)
           ORDER BY relname""",
        (list(tables),),
    )


def monthly_growth(conn: OpsConn, months: int = 12) -> list[dict[str, Any]]:
    """Ledger activity per month (the capacity-planning review)."""
    return rows(
        conn,
        """WITH c AS (
               SELECT date_trunc('month', created_at) AS month, count(*) AS contributions,
                      sum(wager_amount) AS wagered,
                      sum(minor_amount + major_amount + mega_amount) AS contributed
               FROM contributions GROUP BY 1),
           w AS (
               SELECT date_trunc('month', created_at) AS month, count(*) AS wins,
                      sum(amount) AS won
               FROM wins GROUP BY 1)
           SELECT to_char(coalesce(c.month, w.month), 'YYYY-MM') AS month,
                  coalesce(c.contributions, 0) AS contributions,
                  coalesce(c.wagered, 0) AS wagered,
                  coalesce(c.contributed, 0) AS contributed,
                  coalesce(w.wins, 0) AS wins, coalesce(w.won, 0) AS won
           FROM c FULL JOIN w ON c.month = w.month
           ORDER BY 1 DESC LIMIT %s""",
        (months,),
    )


def resource_trends(conn: OpsConn, days: int = 30) -> list[dict[str, Any]] | None:
    """The capacity review's daily CPU, memory and connections (None: no system_metrics)."""
    if not one(conn, "SELECT to_regclass('system_metrics') IS NOT NULL AS present")["present"]:
        return None
    return rows(
        conn,
        """SELECT to_char(date_trunc('day', stat_timestamp), 'YYYY-MM-DD') AS day,
                  round(avg(cpu_usage)::numeric, 2) AS avg_cpu,
                  round(avg(memory_usage)::numeric, 2) AS avg_memory,
                  round(avg(connection_count)::numeric, 2) AS avg_connections,
                  count(*) AS samples
           FROM system_metrics
           WHERE stat_timestamp >= now() - make_interval(days => %s)
           GROUP BY 1 ORDER BY 1""",
        (days,),
    )


def ledger_counts(conn: OpsConn) -> dict[str, Any]:
    """What a restore must reproduce: pools by group and the size of every ledger."""
    pools = rows(
        conn,
        """SELECT jackpot_group AS "group", count(*) AS rows, sum(current_amount) AS current_amount,
                  sum(total_contributions) AS total_contributions, sum(total_wins) AS total_wins,
                  max(version) AS version
           FROM jackpots GROUP BY jackpot_group ORDER BY min(lock_order)""",
    )
    counts = one(
        conn,
        """SELECT (SELECT count(*) FROM jackpots) AS jackpots,
                  (SELECT count(*) FROM contributions) AS contributions,
                  (SELECT count(*) FROM wins) AS wins,
                  (SELECT count(*) FROM seed_fundings) AS seed_fundings,
                  (SELECT count(*) FROM config_audit) AS config_audit""",
    )
    return {"pools": pools, "tables": counts}


def maintain(
    conn: OpsConn,
    tables: Sequence[str],
    *,
    reindex: bool,
    on_step: Callable[[str], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """VACUUM ANALYZE (and REINDEX CONCURRENTLY) each of `tables`; needs autocommit.
    `on_step` hears of each step before it runs (the CLI's progress line)."""
    done: list[dict[str, Any]] = []
    for index, table in enumerate(tables, 1):
        name = sql.Identifier(table)
        actions = [("VACUUM ANALYZE", sql.SQL("VACUUM (ANALYZE) {}").format(name))]
        if reindex:
            actions.append(
                ("REINDEX CONCURRENTLY", sql.SQL("REINDEX TABLE CONCURRENTLY {}").format(name))
            )
        for action, statement in actions:
            on_step(f"maintain: {action} {table} ({index}/{len(tables)})")
            started = time.perf_counter()
            conn.execute(statement)
            seconds = round(time.perf_counter() - started, 2)
            done.append({"table": table, "action": action, "seconds": seconds})
    return done
