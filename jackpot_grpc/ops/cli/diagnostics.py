"""`jackpot diagnostics`: emergency diagnostics for P1 incidents (service, database, host)."""

from __future__ import annotations

import argparse
import asyncio

import psycopg

from jackpot_grpc.config import Settings
from jackpot_grpc.ops.cli.options import Subparsers, common, positive_seconds
from jackpot_grpc.ops.cli.shared import (
    CONNECTION_STATE_COLUMNS,
    HEALTH_COLUMNS,
    LONG_QUERY_COLUMNS,
    Part,
    emit_parts,
    failing_cleanly,
    grpc_target,
    health_base,
)
from jackpot_grpc.ops.output import Section, key_values, progress
from jackpot_grpc.text.messages import first_line


def service_part(settings: Settings, args: argparse.Namespace) -> Part:
    from jackpot_grpc.ops.health_check import run_checks

    progress("diagnostics: service health")
    checks = asyncio.run(
        run_checks(settings, grpc_target(settings, args), health_base(settings, args), args.timeout)
    )
    return Part(
        data={"health": checks},
        sections=[Section("Service health", HEALTH_COLUMNS, [vars(c) for c in checks])],
        problems=[f"{c.check} {c.status}" for c in checks if not c.healthy],
    )


def database_part(settings: Settings, args: argparse.Namespace) -> Part:
    """The database's state; an unreachable database is a problem found, not a failure."""
    from jackpot_grpc.adapters.database import connect_ops
    from jackpot_grpc.ops import pgstat
    from jackpot_grpc.ops.target import open_database

    progress("diagnostics: database")
    try:
        with open_database(settings) as db, connect_ops(db.url, timeout=args.timeout) as conn:
            info = pgstat.server_info(conn)
            usage = pgstat.connection_usage(conn)
            states = pgstat.connections_by_state(conn, None)
            locks = pgstat.locks(conn)
            blocked = pgstat.blocked(conn)
            slow = pgstat.long_running(conn, args.long_query_seconds, this_database=False)
            memory = pgstat.memory_settings(conn)
    except psycopg.Error as exc:
        error = first_line(exc) or type(exc).__name__
        unreachable = {"reachable": False, "error": error}
        return Part(
            data={"database": unreachable},
            sections=[Section("Database", ("item", "value"), key_values(unreachable))],
            problems=[f"database unreachable: {error}"],
        )
    reachable = {"reachable": True, **info, **usage}
    return Part(
        data={
            "database": reachable,
            "connections": states,
            "locks": locks,
            "blocked": blocked,
            "long_running": slow,
            "memory_settings": memory,
        },
        sections=[
            Section("Database", ("item", "value"), key_values(reachable)),
            Section("Connections to this database by state", CONNECTION_STATE_COLUMNS, states),
            Section("Locks", ("locktype", "mode", "granted", "count"), locks, note="no locks held"),
            Section(
                "Blocked sessions",
                ("pid", "blocked_by", "database", "waiting", "query"),
                blocked,
                note="none",
            ),
            Section(
                f"Queries running longer than {args.long_query_seconds:g} s",
                LONG_QUERY_COLUMNS,
                slow,
                note="none",
            ),
            Section("Memory settings", ("name", "value", "setting", "unit"), memory),
        ],
    )


def host_part(settings: Settings) -> Part:
    from jackpot_grpc.ops import diagnostics

    progress("diagnostics: host")
    host = diagnostics.host_resources(
        [settings.process.log_dir]
        if settings.database.url
        else [settings.process.log_dir, settings.database.data_dir]
    )
    processes = diagnostics.jackpot_processes()
    log = diagnostics.recent_log_errors(settings.process.log_dir / "application.log")
    log_summary = {k: v for k, v in log.items() if k != "last"}
    return Part(
        data={"host": host, "processes": processes, "log": log},
        sections=[
            Section("Host", ("item", "value"), key_values(host)),
            Section(
                "Jackpot processes",
                ("pid", "status", "rss_mb", "limit_mb", "memory_percent", "started", "command"),
                processes,
                note="none on this host",
            ),
            Section(
                "Errors in the application log (24 h)",
                ("item", "value"),
                key_values(log_summary) + [{"item": "last", "value": line} for line in log["last"]],
            ),
        ],
    )


@failing_cleanly
def cmd_diagnostics(settings: Settings, args: argparse.Namespace) -> int:
    parts = [] if args.no_service else [service_part(settings, args)]
    parts += [database_part(settings, args), host_part(settings)]
    return emit_parts(args, {}, parts, passed="no problems found", failed="PROBLEMS")


def register(subparsers: Subparsers) -> None:
    diagnostics = subparsers.add_parser("diagnostics", help="emergency diagnostics (P1 incidents)")
    common(diagnostics, grpc_target=True, health=True)
    diagnostics.add_argument("--no-service", action="store_true", help="skip the health checks")
    diagnostics.add_argument("--long-query-seconds", type=positive_seconds, default=5.0)
    diagnostics.set_defaults(func=cmd_diagnostics)
