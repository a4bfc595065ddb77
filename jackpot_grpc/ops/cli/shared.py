"""What the operator commands share: the handler type, clean failures, output, targets.

Every command prints a table for people (or JSON with --json) on stdout, progress on
stderr, and exits non-zero on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg

from jackpot_grpc.config import Settings
from jackpot_grpc.ops.ops_error import OpsError
from jackpot_grpc.ops.output import Section, emit_json, emit_sections, quiet_progress
from jackpot_grpc.ops.target import open_database
from jackpot_grpc.text.messages import first_line

Command = Callable[[Settings, argparse.Namespace], int]

# Tables that more than one command prints.
HEALTH_COLUMNS = ("check", "target", "status", "latency_ms", "detail")
LONG_QUERY_COLUMNS = (
    "pid",
    "database",
    "application_name",
    "state",
    "duration",
    "wait_event",
    "query",
)
CONNECTION_STATE_COLUMNS = ("state", "connections", "max_idle_time")
TABLE_STATS_COLUMNS = (
    "table",
    "live_rows",
    "dead_rows",
    "total_size",
    "last_vacuum",
    "last_analyze",
)


def failing_cleanly(command: Command) -> Command:
    """Expected failures (unreachable database or service, bad input) end as one line, exit 1."""

    @functools.wraps(command)
    def wrapper(settings: Settings, args: argparse.Namespace) -> int:
        from jackpot_grpc.ops.grpc_client import describe_error

        try:
            with quiet_progress(getattr(args, "json", False)):
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


def emit(
    args: argparse.Namespace, data: Any, sections: Sequence[Section], verdict: str | None = None
) -> None:
    """`data` as JSON with --json; otherwise the tables, then the one-line verdict."""
    if args.json:
        emit_json(data)
        return
    emit_sections(sections)
    if verdict:
        print(f"\n{verdict}")


def admin_token(settings: Settings) -> str | None:
    """An admin client's token: JACKPOT_TOKEN (sent by every command, so None here), else
    JACKPOT_ADMIN_TOKEN."""
    from jackpot_grpc.security.secret_rules import require_long_token

    token = None if settings.auth.client_token else settings.auth.admin_token
    require_long_token("JACKPOT_ADMIN_TOKEN", token)  # the server would refuse it anyway
    return token


def grpc_target(settings: Settings, args: argparse.Namespace) -> str:
    return str(args.grpc_target or settings.grpc.target)


def health_url(settings: Settings, args: argparse.Namespace) -> str:
    """The service's health HTTP base URL: --health-url, else localhost:HEALTH_PORT."""
    return str(args.health_url or f"http://localhost:{settings.health.port}")


def health_base(settings: Settings, args: argparse.Namespace) -> str | None:
    """Where the HTTP health check goes; None with --grpc-only."""
    if getattr(args, "grpc_only", False):
        return None
    return health_url(settings, args)


@dataclass
class Part:
    """One part of a many-part report: its JSON fields, its tables, and what went wrong."""

    data: dict[str, Any] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def emit_parts(
    args: argparse.Namespace,
    data: dict[str, Any],
    parts: Sequence[Part],
    *,
    passed: str,
    failed: str,
) -> int:
    """The parts as one report after `data`, judged by their problems; the exit code."""
    problems = [problem for part in parts for problem in part.problems]
    for part in parts:
        data.update(part.data)
    data["ok"] = not problems
    data["problems"] = problems
    verdict = passed if not problems else f"{failed}: " + "; ".join(problems)
    emit(args, data, [section for part in parts for section in part.sections], verdict)
    return 0 if not problems else 1


@contextlib.contextmanager
def database(settings: Settings, *, migrate: bool) -> Iterator[str]:
    """For the service processes: DATABASE_URL, or the embedded PostgreSQL when
    JACKPOT_EMBEDDED_DB asks for it (started here if need be, and then stopped on exit;
    one already running is left running), migrated if asked."""
    from jackpot_grpc.adapters import migrations

    with open_database(settings, service=True) as target:
        if migrate:
            migrations.upgrade(target.url)
        yield target.url
