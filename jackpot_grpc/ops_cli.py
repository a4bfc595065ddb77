"""The operator's runbook commands: health, smoke, db, backup, diagnostics, report, config.

`register(subparsers)` adds them to `jackpot` (cli.py). Each command prints a table for
people (or JSON with --json) on stdout, progress on stderr, and exits non-zero on failure.
Modules are imported inside the commands, so `jackpot serve` pays nothing for them.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import getpass
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import psycopg

from jackpot_grpc.config import PROJECT_ROOT, Settings
from jackpot_grpc.domain.model import GROUP_NAMES
from jackpot_grpc.messages import first_line
from jackpot_grpc.metrics import PERIODS
from jackpot_grpc.ops.errors import OpsError
from jackpot_grpc.ops.output import Section, emit_json, emit_sections, key_values, progress

Command = Callable[[Settings, argparse.Namespace], int]

DEFAULT_BACKUP_DIR = PROJECT_ROOT / "backups"
# argparse formats help with %: a checkout path holding a % must not break --help.
BACKUP_DIR_HELP = f"backup root (default: {str(DEFAULT_BACKUP_DIR).replace('%', '%%')})"


def failing_cleanly(command: Command) -> Command:
    """Expected failures (unreachable database or service, bad input) end as one line, exit 1."""

    @functools.wraps(command)
    def wrapper(settings: Settings, args: argparse.Namespace) -> int:
        from jackpot_grpc.ops.grpc_client import describe_error

        try:
            return command(settings, args)
        except grpc.aio.AioRpcError as exc:
            message = f"service call failed: {describe_error(exc)}"
        except psycopg.Error as exc:
            message = f"database error: {first_line(exc) or type(exc).__name__}"
        except OpsError as exc:
            message = str(exc)
        except OSError as exc:  # a backup directory that cannot be written, say
            where = f": {exc.filename}" if exc.filename else ""
            message = f"{exc.strerror or exc}{where}"
        if getattr(args, "json", False):
            emit_json({"ok": False, "error": message})
        print(f"error: {message}", file=sys.stderr)
        return 1

    return wrapper


def _emit(
    args: argparse.Namespace, data: Any, sections: Sequence[Section], verdict: str | None = None
) -> None:
    if args.json:
        emit_json(data)
        return
    emit_sections(sections)
    if verdict:
        print(f"\n{verdict}")


def _grpc_target(settings: Settings, args: argparse.Namespace) -> str:
    return str(args.grpc_target or settings.grpc_target)


def _health_url(settings: Settings, args: argparse.Namespace) -> str:
    """The service's health HTTP base URL: --health-url, else localhost:HEALTH_PORT."""
    return str(args.health_url or f"http://localhost:{settings.health_port}")


def _health_base(settings: Settings, args: argparse.Namespace) -> str | None:
    if getattr(args, "grpc_only", False):
        return None
    return _health_url(settings, args)


HEALTH_COLUMNS = ("check", "target", "status", "latency_ms", "detail")


# --- health and smoke ------------------------------------------------------------------


@failing_cleanly
def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops.health import run_checks

    checks = asyncio.run(
        run_checks(
            settings, _grpc_target(settings, args), _health_base(settings, args), args.timeout
        )
    )
    healthy = all(c.healthy for c in checks)
    failing = ", ".join(f"{c.check}: {c.status}" for c in checks if not c.healthy)
    _emit(
        args,
        {"healthy": healthy, "checks": checks},
        [Section("Service health", HEALTH_COLUMNS, [vars(c) for c in checks])],
        "healthy" if healthy else f"UNHEALTHY ({failing})",
    )
    return 0 if healthy else 1


@failing_cleanly
def cmd_smoke(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops.smoke import run_smoke

    target = _grpc_target(settings, args)
    # The service audits its own books over its health HTTP: never this shell's database.
    health = None if args.no_audit else _health_url(settings, args)
    result = asyncio.run(
        run_smoke(
            settings,
            target,
            health,
            wager=args.wager,
            win_amount=args.win_amount,
            rpc_timeout=args.timeout,
        )
    )
    _emit(
        args,
        {"ok": result.ok, "target": result.target, "steps": result.steps},
        [
            Section(
                f"Smoke test of {target}",
                ("step", "ok", "ms", "detail"),
                [vars(s) for s in result.steps],
            )
        ],
        "smoke test passed" if result.ok else "SMOKE TEST FAILED",
    )
    return 0 if result.ok else 1


# --- database --------------------------------------------------------------------------


@failing_cleanly
def cmd_db_check(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from jackpot_grpc.ops import pgstat
    from jackpot_grpc.ops.target import connect, open_database, timed_ping

    with open_database(settings) as db:
        started = time.perf_counter()
        try:
            conn = connect(db.url, timeout=args.timeout)
        except psycopg.OperationalError as exc:
            error = first_line(exc) or "cannot connect"
            _emit(
                args,
                {"ok": False, "connected": False, "error": error},
                [
                    Section(
                        "Database",
                        ("item", "value"),
                        key_values({"connected": False, "error": error}),
                    )
                ],
                "DATABASE UNREACHABLE",
            )
            return 1
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
    _emit(args, data, [Section("Database", ("item", "value"), key_values(data))], verdict)
    return 0 if up_to_date else 1


@failing_cleanly
def cmd_db_pool_status(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops import pgstat
    from jackpot_grpc.ops.target import connect, open_database

    with open_database(settings) as db, connect(db.url) as conn:
        states = pgstat.connections_by_state(conn, pgstat.JACKPOT_APPLICATIONS)
        usage = pgstat.connection_usage(conn)
    usage["service_pool_min"] = settings.pool_min_size
    usage["service_pool_max"] = settings.pool_max_size
    ok = usage["used_percent"] <= args.fail_above
    _emit(
        args,
        {"ok": ok, "states": states, "usage": usage},
        [
            Section(
                "Jackpot connections by state (application_name LIKE '%jackpot%')",
                ("state", "connections", "max_idle_time"),
                states,
                note="no jackpot connections to this database",
            ),
            Section("Server connections", ("item", "value"), key_values(usage)),
        ],
        f"{usage['used_percent']}% of usable connections in use"
        + ("" if ok else f" — ABOVE {args.fail_above}%"),
    )
    return 0 if ok else 1


@failing_cleanly
def cmd_db_maintain(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops import pgstat
    from jackpot_grpc.ops.target import connect, open_database

    with open_database(settings) as db, connect(db.url) as conn:
        progress("maintain: VACUUM ANALYZE" + (" and REINDEX CONCURRENTLY" if args.reindex else ""))
        done = pgstat.maintain(conn, reindex=args.reindex)
        tables = pgstat.table_stats(conn)
    _emit(
        args,
        {"ok": True, "actions": done, "tables": tables},
        [
            Section("Maintenance", ("table", "action"), done),
            Section(
                "Tables",
                ("table", "live_rows", "dead_rows", "total_size", "last_vacuum", "last_analyze"),
                tables,
            ),
        ],
        "maintenance done",
    )
    return 0


LONG_QUERY_COLUMNS = (
    "pid",
    "database",
    "application_name",
    "state",
    "duration",
    "wait_event",
    "query",
)


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
    _emit(
        args,
        {"ok": True, "older_than_seconds": args.older_than, "queries": found},
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


# --- backups ---------------------------------------------------------------------------


def _bin_dirs(args: argparse.Namespace, embedded: Path | None) -> list[Path]:
    dirs = [Path(args.pg_bin_dir)] if args.pg_bin_dir else []
    return dirs + ([embedded] if embedded else [])


def _verification_rows(v: Any) -> list[dict[str, Any]]:
    header = {
        k: v.header[k]
        for k in (
            "Dumped from database version",
            "Dumped by pg_dump version",
            "Archive created at",
            "dbname",
        )
        if k in v.header
    }
    return key_values(
        {
            "file": v.file,
            "ok": v.ok,
            "toc_entries": v.entries,
            "tables": len(v.tables),
            "table_data": ", ".join(v.table_data),
            **header,
            "error": v.error or None,
        }
    )


@failing_cleanly
def cmd_backup_create(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops.backup import create_backup
    from jackpot_grpc.ops.target import open_database

    root = Path(args.dir) if args.dir else DEFAULT_BACKUP_DIR
    with open_database(settings) as db:
        result = create_backup(
            db.url, root, _bin_dirs(args, db.bin_dir), with_sql=args.with_sql, verbose=args.verbose
        )
    summary = {
        "file": result.file,
        "size_bytes": result.size_bytes,
        "seconds": result.seconds,
        "database": result.database,
        "server_version": result.server_version,
        "pg_dump": result.pg_dump,
        "verified": result.verification.ok,
        "extra_files": ", ".join(str(p) for p in result.extra_files) or None,
    }
    _emit(
        args,
        {"ok": True, **vars(result)},
        [Section("Backup", ("item", "value"), key_values(summary))],
        f"backup verified: {result.file}",
    )
    return 0


@failing_cleanly
def cmd_backup_verify(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops.backup import newest_tool, verify_backup

    tool = newest_tool("pg_restore", _bin_dirs(args, None))
    result = verify_backup(Path(args.file), tool)
    _emit(
        args,
        {"ok": result.ok, **vars(result)},
        [Section("Backup verification", ("item", "value"), _verification_rows(result))],
        "backup verification successful"
        if result.ok
        else f"BACKUP VERIFICATION FAILED: {result.error}",
    )
    return 0 if result.ok else 1


@failing_cleanly
def cmd_backup_restore(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops.backup import restore_backup
    from jackpot_grpc.ops.target import open_database, with_dbname
    from jackpot_grpc.service.reports import run_audit

    with open_database(settings) as db:
        result = restore_backup(
            db.url,
            Path(args.file),
            args.database,
            _bin_dirs(args, db.bin_dir),
            verbose=args.verbose,
        )
        progress(f"restore: auditing the books of {args.database}")
        books = asyncio.run(run_audit(settings, with_dbname(db.url, args.database)))
    balanced = books.balanced
    groups = [p["group"] for p in result.counts["pools"]]
    ok = balanced and sorted(groups) == sorted(GROUP_NAMES)
    audit_rows = [
        {
            "group": a.group.value,
            "current_amount": a.current_amount,
            "expected_amount": a.expected_amount,
            "balanced": a.balanced,
        }
        for a in books.pools
    ]
    _emit(
        args,
        {"ok": ok, **vars(result), "audit": audit_rows, "balanced": balanced},
        [
            Section(
                "Restore",
                ("item", "value"),
                key_values(
                    {
                        "file": result.file,
                        "database": result.database,
                        "pg_restore": result.pg_restore,
                        "seconds": result.seconds,
                        "schema_revision": result.revision,
                    }
                ),
            ),
            Section(
                "Pools restored",
                ("group", "rows", "current_amount", "total_contributions", "total_wins", "version"),
                result.counts["pools"],
            ),
            Section("Rows per table", ("item", "value"), key_values(result.counts["tables"])),
            Section(
                "Audit", ("group", "current_amount", "expected_amount", "balanced"), audit_rows
            ),
        ],
        f"restored into {result.database}; books balance"
        if ok
        else f"RESTORED INTO {result.database} BUT CHECKS FAILED"
        f" (groups {groups}, balanced {balanced})",
    )
    return 0 if ok else 1


@failing_cleanly
def cmd_backup_prune(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops.backup import prune_backups

    root = Path(args.dir) if args.dir else DEFAULT_BACKUP_DIR
    pruned = prune_backups(root, args.older_than_days, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    _emit(
        args,
        {"ok": True, "dir": root, "dry_run": args.dry_run, "files": pruned},
        [
            Section(
                f"Backups older than {args.older_than_days:g} days in {root}",
                ("file", "size_bytes", "modified", "deleted"),
                pruned,
                note="none",
            )
        ],
        f"{verb} {len(pruned)} file(s)",
    )
    return 0


# --- diagnostics and report ------------------------------------------------------------


@failing_cleanly
def cmd_diagnostics(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops import diagnostics, pgstat
    from jackpot_grpc.ops.health import run_checks
    from jackpot_grpc.ops.target import connect, open_database

    data: dict[str, Any] = {}
    sections: list[Section] = []
    problems: list[str] = []
    if not args.no_service:
        progress("diagnostics: service health")
        checks = asyncio.run(
            run_checks(
                settings, _grpc_target(settings, args), _health_base(settings, args), args.timeout
            )
        )
        data["health"] = checks
        sections.append(Section("Service health", HEALTH_COLUMNS, [vars(c) for c in checks]))
        problems += [f"{c.check} {c.status}" for c in checks if not c.healthy]

    progress("diagnostics: database")
    try:
        with open_database(settings) as db, connect(db.url, timeout=args.timeout) as conn:
            info = pgstat.server_info(conn)
            usage = pgstat.connection_usage(conn)
            states = pgstat.connections_by_state(conn, None)
            locks = pgstat.locks(conn)
            blocked = pgstat.blocked(conn)
            slow = pgstat.long_running(conn, args.long_query_seconds, this_database=False)
            memory = pgstat.memory_settings(conn)
    except psycopg.Error as exc:
        error = first_line(exc) or type(exc).__name__
        data["database"] = {"reachable": False, "error": error}
        sections.append(Section("Database", ("item", "value"), key_values(data["database"])))
        problems.append(f"database unreachable: {error}")
    else:
        data["database"] = {"reachable": True, **info, **usage}
        data.update(
            connections=states,
            locks=locks,
            blocked=blocked,
            long_running=slow,
            memory_settings=memory,
        )
        sections += [
            Section("Database", ("item", "value"), key_values(data["database"])),
            Section(
                "Connections to this database by state",
                ("state", "connections", "max_idle_time"),
                states,
            ),
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
        ]

    progress("diagnostics: host")
    data["host"] = diagnostics.host_resources(
        [settings.log_dir] if settings.database_url else [settings.log_dir, settings.data_dir]
    )
    data["processes"] = diagnostics.jackpot_processes()
    data["log"] = diagnostics.recent_log_errors(settings.log_dir / "application.log")
    log_summary = {k: v for k, v in data["log"].items() if k != "last"}
    sections += [
        Section("Host", ("item", "value"), key_values(data["host"])),
        Section(
            "Jackpot processes",
            ("pid", "status", "rss_mb", "started", "command"),
            data["processes"],
            note="none on this host",
        ),
        Section(
            "Errors in the application log (24 h)",
            ("item", "value"),
            key_values(log_summary)
            + [{"item": "last", "value": line} for line in data["log"]["last"]],
        ),
    ]
    data["ok"] = not problems
    data["problems"] = problems
    _emit(
        args,
        data,
        sections,
        "no problems found" if not problems else "PROBLEMS: " + "; ".join(problems),
    )
    return 0 if not problems else 1


@failing_cleanly
def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    import psycopg

    from jackpot_grpc.history.trend import Trend, load_trend, render_trend
    from jackpot_grpc.ops import performance, pgstat
    from jackpot_grpc.ops.target import connect, open_database

    data: dict[str, Any] = {"period": args.period}
    sections: list[Section] = []
    problems: list[str] = []
    trend: Trend | None = None

    if not args.no_metrics:
        base = args.metrics_url or f"http://localhost:{settings.health_port}/metrics"
        url = performance.metrics_url(base, args.period)
        progress(f"report: metrics from {url}")
        fetched = asyncio.run(performance.fetch_metrics(url, args.timeout))
        if fetched.ok and fetched.data is not None:
            summary = performance.summarize(fetched.data)
            methods = performance.method_rows(fetched.data)
            data["metrics"] = {"url": url, "ok": True, "summary": summary, "methods": methods}
            sections += [
                Section(f"Service metrics ({url})", ("item", "value"), key_values(summary)),
                Section(
                    "By method",
                    (
                        "method",
                        "requests",
                        "error_rate_percent",
                        "avg_ms",
                        "p95_ms",
                        "p99_ms",
                        "per_minute",
                    ),
                    methods,
                    note="no per-method figures",
                ),
            ]
        else:
            data["metrics"] = {"url": url, "ok": False, "error": fetched.error}
            sections.append(
                Section("Service metrics", ("item", "value"), key_values(data["metrics"]))
            )
            problems.append(f"metrics unavailable: {fetched.error}")

    if args.probe > 0:
        target = _grpc_target(settings, args)
        progress(f"report: timing {args.probe} calls of each read RPC on {target}")
        probes = asyncio.run(performance.probe(settings, target, args.probe, args.timeout))
        data["probe"] = probes
        sections.append(
            Section(
                f"Probe of {target}",
                ("rpc", "calls", "avg_ms", "p95_ms", "max_ms", "error"),
                probes,
            )
        )
        problems += [f"probe {p['rpc']}: {p['error']}" for p in probes if p["error"]]

    if not args.no_db:
        progress("report: database statistics")
        with open_database(settings) as db, connect(db.url, timeout=args.timeout) as conn:
            stats = pgstat.statements(conn, args.top)
            indexes = pgstat.index_usage(conn)
            tables = pgstat.table_stats(conn)
            pool = pgstat.connections_by_state(conn, pgstat.JACKPOT_APPLICATIONS)
            growth = pgstat.monthly_growth(conn)
            trends = pgstat.resource_trends(conn)
            try:
                trend = load_trend(conn, args.period)
            except psycopg.errors.UndefinedTable:
                trend = None
                problems.append("no metrics history: run `jackpot migrate`")
        if trend is not None:
            data["trend"] = trend.as_dict()
        data["pg_stat_statements"] = {
            "status": stats.status,
            "detail": stats.detail,
            "summary": stats.summary,
            "top": stats.top,
        }
        data.update(
            indexes=indexes, tables=tables, connections=pool, growth=growth, resources=trends
        )
        sections.append(
            Section(
                f"Top queries (pg_stat_statements: {stats.status})",
                ("query", "calls", "total_ms", "mean_ms", "stddev_ms", "rows", "hit_percent"),
                stats.top,
                note=f"pg_stat_statements {stats.status}: {stats.detail}"
                if stats.status != "ok"
                else "no statements recorded yet",
            )
        )
        if stats.summary:
            sections.append(Section("Query summary", ("item", "value"), key_values(stats.summary)))
        sections += [
            Section(
                "Index usage",
                ("table", "index", "idx_scan", "idx_tup_read", "idx_tup_fetch", "size", "unused"),
                indexes,
            ),
            Section(
                "Tables",
                ("table", "live_rows", "dead_rows", "total_size", "last_vacuum", "last_analyze"),
                tables,
            ),
            Section(
                "Jackpot connections by state",
                ("state", "connections", "max_idle_time"),
                pool,
                note="none",
            ),
            Section(
                "Ledger growth by month",
                ("month", "contributions", "wagered", "contributed", "wins", "won"),
                growth,
                note="no ledger rows yet",
            ),
            Section(
                "Resource utilization by day (system_metrics, 30 days)",
                ("day", "avg_cpu", "avg_memory", "avg_connections", "samples"),
                trends or [],
                note="no samples yet" if trends is not None else "no system_metrics table",
            ),
        ]
    data["ok"] = not problems
    data["problems"] = problems
    _emit(
        args,
        data,
        sections,
        "report complete" if not problems else "INCOMPLETE: " + "; ".join(problems),
    )
    if trend is not None and not args.json:
        print(f"\n== Trend by day, last {args.period} ==\n" + render_trend(trend), end="")
    return 0 if not problems else 1


# --- configuration ---------------------------------------------------------------------

CONFIG_COLUMNS = ("group", "contribution_rate", "seed_amount", "max_amount", "version")


@failing_cleanly
def cmd_config_show(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops import config_admin
    from jackpot_grpc.ops.target import open_database

    if args.from_db:
        with open_database(settings) as db:
            configs = asyncio.run(config_admin.show_db(settings, db.url))
        source = "database"
    else:
        source = _grpc_target(settings, args)
        configs = asyncio.run(config_admin.show_grpc(settings, source, args.timeout))
    rows = [config_admin.config_row(c) for c in configs]
    if args.json:  # the shape `config validate FILE` reads back
        emit_json({"source": source, "pools": rows})
    else:
        emit_sections([Section(f"Pool configuration ({source})", CONFIG_COLUMNS, rows)])
    return 0


@failing_cleanly
def cmd_config_validate(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops import config_admin
    from jackpot_grpc.ops.target import open_database

    if args.file:
        source = args.file
        configs, problems = config_admin.validate_document(config_admin.load_file(Path(args.file)))
    else:
        with open_database(settings) as db:
            configs = asyncio.run(config_admin.show_db(settings, db.url))
        source = "database"
        problems = config_admin.validate_configs(configs)
    ok = not problems
    violations = [{"field": p.field, "problem": p.description} for p in problems]
    rows = [config_admin.config_row(c) for c in configs]
    _emit(
        args,
        {"ok": ok, "source": source, "violations": violations, "pools": rows},
        [
            Section(f"Pool configuration ({source})", CONFIG_COLUMNS, rows, note="no valid pool"),
            Section("Violations", ("field", "problem"), violations, note="none"),
        ],
        "configuration is valid"
        if ok
        else "INVALID: " + "; ".join(f"{v['field']}: {v['problem']}" for v in violations),
    )
    return 0 if ok else 1


@failing_cleanly
def cmd_config_update(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.domain.errors import InvalidArgument
    from jackpot_grpc.domain.model import Group
    from jackpot_grpc.ops import config_admin

    if not (args.rate or args.seed is not None or args.max is not None or args.clear_max):
        print(
            "error: nothing to change: give --rate, --seed, --max or --clear-max", file=sys.stderr
        )
        return 2
    target = _grpc_target(settings, args)
    request = config_admin.update_request(
        Group(args.group),
        rate=args.rate,
        seed=args.seed,
        cap=args.max,
        clear_cap=args.clear_max,
        expected_version=args.expected_version,
        actor=args.actor or getpass.getuser(),
        reason=args.reason,
    )
    if args.dry_run:
        current = {
            c.group.value: c
            for c in asyncio.run(config_admin.show_grpc(settings, target, args.timeout))
        }
        before = current[args.group]
        try:
            after = config_admin.preview_change(before, request)
        except InvalidArgument as exc:
            violations = [{"field": v.field, "problem": v.description} for v in exc.violations]
            _emit(
                args,
                {"ok": False, "dry_run": True, "violations": violations},
                [Section("Violations", ("field", "problem"), violations)],
                "INVALID CHANGE",
            )
            return 1
        rows = [
            {"": "before", **config_admin.config_row(before)},
            {"": "after", **config_admin.config_row(after)},
        ]
        _emit(
            args,
            {"ok": True, "dry_run": True, "before": rows[0], "after": rows[1]},
            [Section("Dry run (nothing sent)", ("", *CONFIG_COLUMNS), rows)],
            "change is valid; run again without --dry-run to apply",
        )
        return 0
    # An admin client's token: JACKPOT_TOKEN (sent by every command), else JACKPOT_ADMIN_TOKEN.
    token = None if settings.client_token else settings.admin_token
    config, audit_id = asyncio.run(
        config_admin.update_grpc(settings, target, token, request, args.timeout)
    )
    row = config_admin.config_row(config)
    _emit(
        args,
        {"ok": True, "audit_id": audit_id, "config": row},
        [Section(f"Updated ({target})", CONFIG_COLUMNS, [row])],
        f"{args.group} updated to version {config.version} (audit #{audit_id})",
    )
    return 0


# --- registration ----------------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _health_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--health-url",
        help="base URL of the health HTTP (default: http://localhost:HEALTH_PORT)",
    )


def _common(
    parser: argparse.ArgumentParser, *, grpc_target: bool = False, health: bool = False
) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--timeout", type=_positive_seconds, default=5.0, help="seconds per call")
    if grpc_target:
        parser.add_argument(
            "--grpc-target", help="host:port of the gRPC server (default: JACKPOT_GRPC_TARGET)"
        )
    if health:
        _health_url_option(parser)
        parser.add_argument("--grpc-only", action="store_true", help="skip the HTTP health check")


def _pg_bin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pg-bin-dir", help="directory of pg_dump/pg_restore to try first")
    parser.add_argument("--verbose", action="store_true", help="show the client tool's output")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    health = subparsers.add_parser(
        "health", help="gRPC health and HTTP /health of a running service"
    )
    _common(health, grpc_target=True, health=True)
    health.set_defaults(func=cmd_health)

    smoke = subparsers.add_parser(
        "smoke", help="contribute, win a little, and have the service audit its books"
    )
    _common(smoke, grpc_target=True)
    _health_url_option(smoke)  # where the service audits its books: /health/jackpot?audit=now
    smoke.add_argument(
        "--wager", type=_positive_int, default=1000, help="wager of the test contribution"
    )
    smoke.add_argument(
        "--win-amount", type=_positive_int, default=1, help="test win on minor (minor units)"
    )
    smoke.add_argument(
        "--no-audit", action="store_true", help="skip the service's audit of its books"
    )
    smoke.set_defaults(func=cmd_smoke)

    db = subparsers.add_parser("db", help="database checks and maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    check = db_sub.add_parser("check", help="connect, version, latency, schema revision vs head")
    _common(check)
    check.set_defaults(func=cmd_db_check)
    pool = db_sub.add_parser("pool-status", help="jackpot connections by state; max_connections")
    _common(pool)
    pool.add_argument(
        "--fail-above",
        type=float,
        default=95.0,
        help="exit 1 above this %% of usable connections in use (default: %(default)s)",
    )
    pool.set_defaults(func=cmd_db_pool_status)
    maintain = db_sub.add_parser("maintain", help="VACUUM ANALYZE the service's tables")
    _common(maintain)
    maintain.add_argument("--reindex", action="store_true", help="also REINDEX TABLE CONCURRENTLY")
    maintain.set_defaults(func=cmd_db_maintain)
    long_queries = db_sub.add_parser("long-queries", help="list (or end) long-running queries")
    _common(long_queries)
    long_queries.add_argument("--older-than", type=_positive_seconds, default=300.0, help="seconds")
    long_queries.add_argument("--terminate", action="store_true", help="pg_terminate_backend them")
    long_queries.add_argument("--all-databases", action="store_true", help="not only this one")
    long_queries.set_defaults(func=cmd_db_long_queries)

    backup = subparsers.add_parser("backup", help="create, verify, restore and prune backups")
    backup_sub = backup.add_subparsers(dest="backup_command", required=True)
    create = backup_sub.add_parser("create", help="pg_dump --format=custom, then verify it")
    _common(create)
    _pg_bin(create)
    create.add_argument("--dir", help=BACKUP_DIR_HELP)
    create.add_argument(
        "--with-sql", action="store_true", help="also schema-only and data-only SQL"
    )
    create.set_defaults(func=cmd_backup_create)
    verify = backup_sub.add_parser("verify", help="pg_restore --list a backup; check its tables")
    _common(verify)
    _pg_bin(verify)
    verify.add_argument("file")
    verify.set_defaults(func=cmd_backup_verify)
    restore = backup_sub.add_parser("restore", help="restore into a NEW database and check it")
    _common(restore)
    _pg_bin(restore)
    restore.add_argument("file")
    restore.add_argument("--database", required=True, help="name of the database to create")
    restore.set_defaults(func=cmd_backup_restore)
    prune = backup_sub.add_parser("prune", help="delete backups older than N days")
    _common(prune)
    prune.add_argument("--dir", help=BACKUP_DIR_HELP)
    prune.add_argument("--older-than-days", type=_positive_seconds, default=30.0)
    prune.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    prune.set_defaults(func=cmd_backup_prune)

    diagnostics = subparsers.add_parser("diagnostics", help="emergency diagnostics (P1 incidents)")
    _common(diagnostics, grpc_target=True, health=True)
    diagnostics.add_argument("--no-service", action="store_true", help="skip the health checks")
    diagnostics.add_argument("--long-query-seconds", type=_positive_seconds, default=5.0)
    diagnostics.set_defaults(func=cmd_diagnostics)

    report = subparsers.add_parser("report", help="performance report: metrics and database")
    _common(report, grpc_target=True)
    report.add_argument("--metrics-url", help="default: http://localhost:HEALTH_PORT/metrics")
    report.add_argument("--period", default="24h", choices=tuple(PERIODS), help="metrics window")
    report.add_argument("--probe", type=int, default=0, help="time N calls of each read RPC")
    report.add_argument("--top", type=_positive_int, default=10, help="top N queries")
    report.add_argument("--no-metrics", action="store_true", help="skip the service's metrics")
    report.add_argument("--no-db", action="store_true", help="skip the database statistics")
    report.set_defaults(func=cmd_report)

    config = subparsers.add_parser("config", help="show, validate or update pool configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="GetConfig (or read the database)")
    _common(show, grpc_target=True)
    show.add_argument("--from-db", action="store_true", help="read the database, not the service")
    show.set_defaults(func=cmd_config_show)
    validate = config_sub.add_parser("validate", help="check a JSON/TOML file or the database")
    _common(validate)
    validate.add_argument("file", nargs="?", help="config file (default: the database's config)")
    validate.set_defaults(func=cmd_config_validate)
    update = config_sub.add_parser(
        "update", help="UpdateConfig (admin; JACKPOT_TOKEN or JACKPOT_ADMIN_TOKEN)"
    )
    _common(update, grpc_target=True)
    update.add_argument("--group", required=True, choices=GROUP_NAMES)
    update.add_argument("--rate", help="contribution rate, an exact decimal (0.006)")
    update.add_argument("--seed", type=int, help="seed amount (minor units)")
    update.add_argument("--max", type=int, help="cap (minor units)")
    update.add_argument("--clear-max", action="store_true", help="remove the cap")
    update.add_argument("--expected-version", type=int, help="apply only at this pool version")
    update.add_argument("--actor", help="who makes the change (default: the login name)")
    update.add_argument("--reason", default="", help="why (kept in the audit)")
    update.add_argument("--dry-run", action="store_true", help="validate against GetConfig only")
    update.set_defaults(func=cmd_config_update)
