"""`jackpot`: the operator's commands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Coroutine, Iterator
from typing import Any

from jackpot_grpc import ops_cli
from jackpot_grpc.adapters import migrations
from jackpot_grpc.config import Settings
from jackpot_grpc.logging_setup import configure_logging
from jackpot_grpc.ops.output import render_table
from jackpot_grpc.ops.target import open_database
from jackpot_grpc.supervisor import supervise


@contextlib.contextmanager
def database(settings: Settings, *, migrate: bool) -> Iterator[str]:
    """DATABASE_URL, or the embedded PostgreSQL (started here if need be, and then
    stopped on exit; one already running is left running), migrated if asked."""
    with open_database(settings) as target:
        if migrate:
            migrations.upgrade(target.url)
        yield target.url


def child_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "jackpot_grpc.cli", *args]


def run_service(settings: Settings, main: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived service process (server or gateway) on JACKPOT_EVENT_LOOP."""
    if settings.event_loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.entrypoints.server import start_server
    from jackpot_grpc.signals import wait_for_signal
    from jackpot_grpc.telemetry import setup_telemetry

    async def serve(url: str) -> None:
        telemetry = setup_telemetry()
        running = await start_server(
            settings, url, reuse_port=settings.reuse_port, telemetry=telemetry
        )
        try:
            await wait_for_signal()
        finally:
            await running.stop()
            telemetry.shutdown()

    with database(settings, migrate=not args.no_migrate) as url:
        if args.workers <= 1:
            run_service(settings, serve(url))
            return 0
        # N processes share the ports through SO_REUSEPORT; the kernel spreads connections.
        env = {**os.environ, "DATABASE_URL": url, "JACKPOT_REUSE_PORT": "on"}
        return supervise([child_command("serve", "--no-migrate")] * args.workers, env)


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.gateway.app import run_gateway

    run_service(settings, run_gateway(settings))
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """Everything `make run` needs: database, migrations, gRPC server, gateway."""
    with database(settings, migrate=True) as url:
        env = {**os.environ, "DATABASE_URL": url}
        serve = child_command("serve", "--no-migrate", "--workers", str(args.workers))
        return supervise([serve, child_command("gateway")], env)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    if args.dry_run:
        migrations.print_upgrade_sql()
        return 0
    with database(settings, migrate=True):
        print("database is at the latest schema revision")
    return 0


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.service.reports import audit_report, run_audit

    with database(settings, migrate=False) as url:
        books = asyncio.run(run_audit(settings, url))
    if args.json:
        print(json.dumps(audit_report(books), indent=2))
    else:
        columns = ("group", "current_amount", "seed_funding", "contributions", "wins")
        rows = [
            {
                **{c: getattr(a, c) for c in columns[1:]},
                "group": a.group.value,
                "discrepancy": a.discrepancy,
                "status": "ok" if a.balanced else "MISMATCH",
            }
            for a in books.pools
        ]
        print(render_table((*columns, "discrepancy", "status"), rows))
        print(
            f"contribution totals: {books.recorded_contribution_count} contributions,"
            f" {books.recorded_total_wagered} wagered"
        )
        for problem in books.problems():
            print(f"MISMATCH: {problem}")
        print("books balance" if books.balanced else "BOOKS DO NOT BALANCE")
    return 0 if books.balanced else 1


SERVICES = ("serve", "run", "gateway")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jackpot", description="Jackpot service commands")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server (and its health/metrics HTTP)")
    serve.add_argument("--no-migrate", action="store_true", help="do not migrate at start")
    serve.add_argument("--workers", type=int, default=1, help="server processes on one port")
    serve.set_defaults(func=cmd_serve)

    gateway = sub.add_parser("gateway", help="run the REST gateway sidecar")
    gateway.set_defaults(func=cmd_gateway)

    run = sub.add_parser("run", help="database, migrations, gRPC server and gateway together")
    run.add_argument("--workers", type=int, default=1, help="gRPC server processes")
    run.set_defaults(func=cmd_run)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--dry-run", action="store_true", help="print the SQL, change nothing")
    migrate.set_defaults(func=cmd_migrate)

    audit = sub.add_parser("audit", help="reconcile every pool against its ledger")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(func=cmd_audit)

    ops_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    if args.command in SERVICES:
        configure_logging(settings.log_dir, log_format=settings.log_format)
    else:  # reports own stdout; logs go to stderr
        configure_logging(None, stream=sys.stderr, log_format=settings.log_format)
    code: int = args.func(settings, args)
    return code


if __name__ == "__main__":
    sys.exit(main())
