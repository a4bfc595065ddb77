"""`jackpot db check | pool-status | maintain | long-queries`: the database's health and upkeep."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import psycopg

from jackpot_grpc.config import Settings
from jackpot_grpc.ops.cli.options import Subparsers, common, health_url_option, positive_seconds
from jackpot_grpc.ops.cli.shared import (
    CONNECTION_STATE_COLUMNS,
    LONG_QUERY_COLUMNS,
    TABLE_STATS_COLUMNS,
    emit,
    failing_cleanly,
    health_url,
)
from jackpot_grpc.ops.output import Section, key_values, progress
from jackpot_grpc.text.messages import first_line


def _emit_unreachable(args: argparse.Namespace, error: str) -> int:
    emit(
        args,
        {"ok": False, "connected": False, "error": error},
        [Section("Database", ("item", "value"), key_values({"connected": False, "error": error}))],
        "DATABASE UNREACHABLE",
    )
    return 1


@failing_cleanly
def cmd_db_check(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops import pgstat
    from jackpot_grpc.ops.target import connect, open_database, timed_ping

    with open_database(settings) as db:
        started = time.perf_counter()
        try:
            conn = connect(db.url, timeout=args.timeout)
        except psycopg.OperationalError as exc:
            return _emit_unreachable(args, first_line(exc) or "cannot connect")
        connect_ms = round((time.perf_counter() - started) * 1000, 2)
        with conn:
            latency = round(timed_ping(conn), 3)
            info = pgstat.server_info(conn)
            current = pgstat.current_revision(conn)
    head = pgstat.head_revision()
    up_to_date = current is not None and current == head
    data = {
        "ok": up_to_date,
        "connected": True,
        "connect_ms": connect_ms,
        "latency_ms": latency,
        **info,
        "revision": current,
        "head_revision": head,
        "up_to_date": up_to_date,
    }
    verdict = (
        "database reachable, schema up to date"
        if up_to_date
        else f"SCHEMA BEHIND: at {current or 'no revision'}, head is {head} (run `jackpot migrate`)"
    )
    emit(args, data, [Section("Database", ("item", "value"), key_values(data))], verdict)
    return 0 if up_to_date else 1


def _service_pool_problems(pool: dict[str, Any], fail_above: float) -> list[str]:
    if "error" in pool:
        return [f"service pool unknown: {pool['url']}: {pool['error']}"]
    problems = []
    if pool.get("status") == "exhausted":
        problems.append(
            f"service pool exhausted: {pool['in_use']}/{pool['max_size']} in use,"
            f" {pool['requests_waiting']} waiting"
        )
    elif pool.get("utilization_percent", 0) > fail_above:
        problems.append(
            f"service pool {pool['utilization_percent']}% in use"
            f" ({pool['in_use']}/{pool['max_size']}) — ABOVE {fail_above:g}%"
        )
    return problems


@failing_cleanly
def cmd_db_pool_status(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops import pgstat
    from jackpot_grpc.ops.health_check import service_pool
    from jackpot_grpc.ops.target import connect, open_database

    with open_database(settings) as db, connect(db.url) as conn:
        states = pgstat.connections_by_state(conn, pgstat.JACKPOT_APPLICATIONS)
        usage = pgstat.connection_usage(conn)
    # The pool as the running server has it (its DB_POOL_MAX, its load), not this
    # command's settings.
    pool = asyncio.run(service_pool(health_url(settings, args), args.timeout))
    problems = _service_pool_problems(pool, args.fail_above)
    if usage["used_percent"] > args.fail_above:
        problems.append(
            f"{usage['used_percent']}% of usable server connections in use"
            f" — ABOVE {args.fail_above:g}%"
        )
    emit(
        args,
        {
            "ok": not problems,
            "states": states,
            "usage": usage,
            "service_pool": pool,
            "problems": problems,
        },
        [
            Section(
                f"Service pool (the server's own, {pool['url']})",
                ("item", "value"),
                key_values({k: v for k, v in pool.items() if k not in ("url", "counters")}),
            ),
            Section(
                "Jackpot connections by state (application_name LIKE '%jackpot%')",
                CONNECTION_STATE_COLUMNS,
                states,
                note="no jackpot connections to this database",
            ),
            Section("Server connections", ("item", "value"), key_values(usage)),
        ],
        (
            f"service pool {pool.get('utilization_percent')}% in use;"
            f" {usage['used_percent']}% of usable server connections in use"
        )
        if not problems
        else "POOL STATUS: " + "; ".join(problems),
    )
    return 0 if not problems else 1


@failing_cleanly
def cmd_db_maintain(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops import pgstat
    from jackpot_grpc.ops.target import connect, open_database

    with open_database(settings) as db, connect(db.url) as conn:
        # Every table of the schema the database has (contribution_totals, the hottest,
        # included), not a list to keep up to date.
        names = pgstat.existing_tables(conn, pgstat.schema_tables())
        progress("maintain: VACUUM ANALYZE" + (" and REINDEX CONCURRENTLY" if args.reindex else ""))
        done = pgstat.maintain(conn, names, reindex=args.reindex, on_step=progress)
        tables = pgstat.table_stats(conn, names)
    emit(
        args,
        {"ok": True, "actions": done, "tables": tables},
        [
            Section("Maintenance", ("table", "action", "seconds"), done),
            Section("Tables", TABLE_STATS_COLUMNS, tables),
        ],
        "maintenance done",
    )
    return 0


@failing_cleanly
def cmd_db_long_queries(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops import pgstat
    from jackpot_grpc.ops.target import connect, open_database

    with open_database(settings) as db, connect(db.url) as conn:
        found = pgstat.long_running(conn, args.older_than, this_database=not args.all_databases)
        terminated: dict[int, bool] = {}
        if args.terminate and found:
            progress(f"terminating {len(found)} backend(s)")
            terminated = pgstat.terminate(conn, [r["pid"] for r in found])
    for row in found:
        row["terminated"] = terminated.get(row["pid"]) if args.terminate else None
    columns = (*LONG_QUERY_COLUMNS, "terminated") if args.terminate else LONG_QUERY_COLUMNS
    data: dict[str, Any] = {"ok": True, "older_than_seconds": args.older_than, "queries": found}
    emit(
        args,
        data,
        [
            Section(
                f"Queries running longer than {args.older_than:g} s",
                columns,
                found,
                note="none",
            )
        ],
    )
    return 0


def register(subparsers: Subparsers) -> None:
    db = subparsers.add_parser("db", help="database checks and maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    check = db_sub.add_parser("check", help="connect, version, latency, schema revision vs head")
    common(check)
    check.set_defaults(func=cmd_db_check)
    pool = db_sub.add_parser(
        "pool-status", help="the server's pool; jackpot connections by state; max_connections"
    )
    common(pool)
    health_url_option(pool)
    pool.add_argument(
        "--fail-above",
        type=float,
        default=95.0,
        help="exit 1 above this %% of the service pool or of usable server connections in use"
        " (default: %(default)s)",
    )
    pool.set_defaults(func=cmd_db_pool_status)
    maintain = db_sub.add_parser("maintain", help="VACUUM ANALYZE every table of the schema")
    common(maintain)
    maintain.add_argument("--reindex", action="store_true", help="also REINDEX TABLE CONCURRENTLY")
    maintain.set_defaults(func=cmd_db_maintain)
    long_queries = db_sub.add_parser("long-queries", help="list (or end) long-running queries")
    common(long_queries)
    long_queries.add_argument("--older-than", type=positive_seconds, default=300.0, help="seconds")
    long_queries.add_argument("--terminate", action="store_true", help="pg_terminate_backend them")
    long_queries.add_argument("--all-databases", action="store_true", help="not only this one")
    long_queries.set_defaults(func=cmd_db_long_queries)
