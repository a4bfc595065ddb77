"""`jackpot report`: the performance report, from the service's metrics, timed probes of its
read RPCs, and the database's statistics and metrics history.

Each source is gathered, then rendered into a part of the report (its JSON fields, its
tables, its problems); the parts are emitted as one report, the trend chart last.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import psycopg

from jackpot_grpc.config import Settings
from jackpot_grpc.observability.metrics import PERIODS
from jackpot_grpc.ops.cli.options import Subparsers, common, positive_int, positive_seconds
from jackpot_grpc.ops.cli.shared import (
    CONNECTION_STATE_COLUMNS,
    TABLE_STATS_COLUMNS,
    Part,
    emit_parts,
    failing_cleanly,
    grpc_target,
)
from jackpot_grpc.ops.ops_error import OpsError
from jackpot_grpc.ops.output import Section, key_values, progress

if TYPE_CHECKING:
    from jackpot_grpc.history.trend import Trend
    from jackpot_grpc.ops.performance import MetricsFetch
    from jackpot_grpc.ops.pgstat import StatementStats

METHOD_COLUMNS = (
    "method",
    "requests",
    "error_rate_percent",
    "avg_ms",
    "p95_ms",
    "p99_ms",
    "per_minute",
)
PROBE_COLUMNS = ("rpc", "calls", "avg_ms", "p95_ms", "max_ms", "error")
STATEMENT_COLUMNS = ("query", "calls", "total_ms", "mean_ms", "stddev_ms", "rows", "hit_percent")
INDEX_COLUMNS = ("table", "index", "idx_scan", "idx_tup_read", "idx_tup_fetch", "size", "unused")
GROWTH_COLUMNS = ("month", "contributions", "wagered", "contributed", "wins", "won")
RESOURCE_COLUMNS = ("day", "avg_cpu", "avg_memory", "avg_connections", "samples")


# --- gathering ---------------------------------------------------------------------------


def gather_metrics(settings: Settings, args: argparse.Namespace) -> MetricsFetch:
    from jackpot_grpc.ops import performance

    base = args.metrics_url or f"http://localhost:{settings.health.port}/metrics"
    url = performance.metrics_url(base, args.period)
    progress(f"report: metrics from {url}")
    return asyncio.run(performance.fetch_metrics(url, args.timeout))


@dataclass(frozen=True)
class Probes:
    target: str
    rows: list[dict[str, Any]]


def gather_probes(settings: Settings, args: argparse.Namespace) -> Probes:
    from jackpot_grpc.ops import performance

    target = grpc_target(settings, args)
    progress(f"report: timing {args.probe} calls of each read RPC on {target}")
    return Probes(
        target, asyncio.run(performance.probe(settings, target, args.probe, args.timeout))
    )


@dataclass(frozen=True)
class DatabaseStats:
    statements: StatementStats
    indexes: list[dict[str, Any]]
    tables: list[dict[str, Any]]
    connections: list[dict[str, Any]]
    growth: list[dict[str, Any]]
    resources: list[dict[str, Any]] | None  # None: no system_metrics table
    trend: Trend | None  # None: no metrics history tables


def gather_database(settings: Settings, args: argparse.Namespace) -> DatabaseStats:
    from jackpot_grpc.adapters.database import connect_ops
    from jackpot_grpc.history.trend import load_trend
    from jackpot_grpc.ops import pgstat
    from jackpot_grpc.ops.target import open_database

    progress("report: database statistics")
    with open_database(settings) as db, connect_ops(db.url, timeout=args.timeout) as conn:
        stats = pgstat.statements(conn, args.top)
        indexes = pgstat.index_usage(conn)
        tables = pgstat.table_stats(conn)
        pool = pgstat.connections_by_state(conn, pgstat.JACKPOT_APPLICATIONS)
        growth = pgstat.monthly_growth(conn)
        resources = pgstat.resource_trends(conn)
        try:
            trend: Trend | None = load_trend(conn, args.period)
        except psycopg.errors.UndefinedTable:
            trend = None
    return DatabaseStats(stats, indexes, tables, pool, growth, resources, trend)


# --- rendering ---------------------------------------------------------------------------


def metrics_part(fetched: MetricsFetch) -> Part:
    from jackpot_grpc.ops import performance

    url = fetched.url
    if not fetched.ok or fetched.data is None:
        failure = {"url": url, "ok": False, "error": fetched.error}
        return Part(
            data={"metrics": failure},
            sections=[Section("Service metrics", ("item", "value"), key_values(failure))],
            problems=[f"metrics unavailable: {fetched.error}"],
        )
    summary = performance.summarize(fetched.data)
    methods = performance.method_rows(fetched.data)
    return Part(
        data={"metrics": {"url": url, "ok": True, "summary": summary, "methods": methods}},
        sections=[
            Section(f"Service metrics ({url})", ("item", "value"), key_values(summary)),
            Section("By method", METHOD_COLUMNS, methods, note="no per-method figures"),
        ],
        problems=performance.off_target(summary),
    )


def probe_part(probes: Probes) -> Part:
    return Part(
        data={"probe": probes.rows},
        sections=[Section(f"Probe of {probes.target}", PROBE_COLUMNS, probes.rows)],
        problems=[f"probe {p['rpc']}: {p['error']}" for p in probes.rows if p["error"]],
    )


def database_part(db: DatabaseStats) -> Part:
    stats = db.statements
    data: dict[str, Any] = {} if db.trend is None else {"trend": db.trend.as_dict()}
    data["pg_stat_statements"] = {
        "status": stats.status,
        "detail": stats.detail,
        "summary": stats.summary,
        "top": stats.top,
    }
    data.update(
        indexes=db.indexes,
        tables=db.tables,
        connections=db.connections,
        growth=db.growth,
        resources=db.resources,
    )
    sections = [
        Section(
            f"Top queries (pg_stat_statements: {stats.status})",
            STATEMENT_COLUMNS,
            stats.top,
            note=f"pg_stat_statements {stats.status}: {stats.detail}"
            if stats.status != "ok"
            else "no statements recorded yet",
        )
    ]
    if stats.summary:
        sections.append(Section("Query summary", ("item", "value"), key_values(stats.summary)))
    sections += [
        Section("Index usage", INDEX_COLUMNS, db.indexes),
        Section("Tables", TABLE_STATS_COLUMNS, db.tables),
        Section(
            "Jackpot connections by state", CONNECTION_STATE_COLUMNS, db.connections, note="none"
        ),
        Section("Ledger growth by month", GROWTH_COLUMNS, db.growth, note="no ledger rows yet"),
        Section(
            "Resource utilization by day (system_metrics, 30 days)",
            RESOURCE_COLUMNS,
            db.resources or [],
            note="no samples yet" if db.resources is not None else "no system_metrics table",
        ),
    ]
    problems = ["no metrics history: run `jackpot migrate`"] if db.trend is None else []
    return Part(data=data, sections=sections, problems=problems)


# --- emitting ----------------------------------------------------------------------------


def emit_report(args: argparse.Namespace, parts: list[Part], trend: Trend | None) -> int:
    """The parts as one report; for people, the trend chart after the tables."""
    from jackpot_grpc.history.trend import render_trend

    code = emit_parts(
        args, {"period": args.period}, parts, passed="report complete", failed="REPORT FAILED"
    )
    if trend is not None and not args.json:
        print(f"\n== Trend by day, last {args.period} ==\n" + render_trend(trend), end="")
    return code


@failing_cleanly
def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    parts: list[Part] = []
    trend: Trend | None = None
    if not args.no_metrics:
        parts.append(metrics_part(gather_metrics(settings, args)))
    if args.probe > 0:
        parts.append(probe_part(gather_probes(settings, args)))
    if not args.no_db:
        stats = gather_database(settings, args)
        parts.append(database_part(stats))
        trend = stats.trend
    return emit_report(args, parts, trend)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


@failing_cleanly
def cmd_reconciliation(settings: Settings, args: argparse.Namespace) -> int:
    """Per pool and UTC day: openings, movements, closings, and whether the identity holds."""
    from jackpot_grpc.adapters.database import connect_ops
    from jackpot_grpc.ops import reconciliation
    from jackpot_grpc.ops.target import open_database

    if args.end < args.start:
        raise OpsError("--to must not be before --from")
    progress(f"report: reconciliation {args.start} to {args.end} from the ledger")
    with open_database(settings) as db, connect_ops(db.url, timeout=args.timeout) as conn:
        days = reconciliation.reconcile(conn, args.start, args.end)
    broken = [f"{d.group} {d.day}" for d in days if not d.holds]
    if args.csv:
        print(reconciliation.as_csv(days), end="")
        return 0 if not broken else 1
    data = {"from": args.start.isoformat(), "to": args.end.isoformat()}
    part = Part(
        data={"days": [d.as_dict() for d in days]},
        sections=[
            Section(
                f"Reconciliation {args.start} to {args.end} (UTC days, from the ledger)",
                RECONCILIATION_COLUMNS,
                [_short(d.as_dict()) for d in days],
            )
        ],
        problems=[f"identity does not hold: {', '.join(broken)}"] if broken else [],
    )
    return emit_parts(args, data, [part], passed="books reconcile", failed="RECONCILIATION FAILED")


# The table (--json and --csv carry every column).
RECONCILIATION_COLUMNS = (
    "day",
    "group",
    "opening",
    "contributed",
    "paid",
    "hits",
    "seed_op",
    "seed_rsv",
    "reserve",
    "overflow",
    "div_in",
    "div_out",
    "closing",
    "identity",
)


def _short(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "day": row["day"],
        "group": row["group"],
        "opening": row["opening_display"],
        "contributed": row["contributed"],
        "paid": row["paid"],
        "hits": row["hits"],
        "seed_op": row["seed_operator"],
        "seed_rsv": row["seed_reserve"],
        "reserve": f"{row['opening_reserve']}->{row['closing_reserve']}",
        "overflow": f"{row['opening_overflow']}->{row['closing_overflow']}",
        "div_in": row["diverted_in"],
        "div_out": row["diverted_out"],
        "closing": row["closing_display"],
        "identity": "holds" if row["identity_holds"] else "BROKEN",
    }


def register(subparsers: Subparsers) -> None:
    report = subparsers.add_parser("report", help="performance report: metrics and database")
    common(report, grpc_target=True)
    report.add_argument("--metrics-url", help="default: http://localhost:HEALTH_PORT/metrics")
    report.add_argument("--period", default="24h", choices=tuple(PERIODS), help="metrics window")
    report.add_argument("--probe", type=int, default=0, help="time N calls of each read RPC")
    report.add_argument("--top", type=positive_int, default=10, help="top N queries")
    report.add_argument("--no-metrics", action="store_true", help="skip the service's metrics")
    report.add_argument("--no-db", action="store_true", help="skip the database statistics")
    report.set_defaults(func=cmd_report)
    kinds = report.add_subparsers(dest="report_kind", metavar="{reconciliation}")
    reconcile = kinds.add_parser(
        "reconciliation",
        help="per pool and day: opening, each meter's movement, closing, identity (ledger only)",
    )
    reconcile.add_argument("--from", dest="start", type=_day, required=True, help="YYYY-MM-DD")
    reconcile.add_argument("--to", dest="end", type=_day, required=True, help="YYYY-MM-DD")
    formats = reconcile.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print JSON instead of tables")
    formats.add_argument("--csv", action="store_true", help="print CSV, one row per pool and day")
    reconcile.add_argument("--timeout", type=positive_seconds, default=30.0, help="seconds")
    reconcile.set_defaults(func=cmd_reconciliation)
