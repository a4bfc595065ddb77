"""`jackpot`: the entry point. The service processes (serve, gateway, run) live here;
the operator's commands come from jackpot_grpc.ops.cli."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

from jackpot_grpc.config import Settings, log_dir_from_env, log_format_from_env
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.observability.logging_setup import configure_logging
from jackpot_grpc.ops import cli as ops_commands
from jackpot_grpc.ops.cli.shared import database
from jackpot_grpc.runtime.supervisor import supervise

log = logging.getLogger("jackpot_grpc.cli")


def child_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "jackpot_grpc.cli", *args]


def run_service(settings: Settings, main: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived service process (server or gateway) on JACKPOT_EVENT_LOOP."""
    if settings.process.event_loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.entrypoints.server import serve

    migrate = settings.database.migrate_on_start if args.migrate is None else args.migrate
    with database(settings, migrate=migrate) as url:
        if args.workers <= 1:
            run_service(settings, serve(settings, url))
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
        if args.edge:
            from jackpot_grpc.edge.processes import edge_children

            commands, overrides = edge_children(settings, args.workers, child_command)
            return supervise(commands, env, overrides=overrides)
        serve = child_command("serve", "--no-migrate", "--workers", str(args.workers))
        return supervise([serve, child_command("gateway")], env)


def cmd_edge(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.edge.runner import EdgePorts, edge_settings, run_edge

    ports = EdgePorts.from_env(dict(os.environ), settings)
    return run_edge(settings, edge_settings(settings, ports, args.servers))


SERVICES = ("serve", "run", "gateway", "edge")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jackpot", description="Jackpot service commands")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server (and its health/metrics HTTP)")
    serve.add_argument(
        "--migrate",
        action=argparse.BooleanOptionalAction,
        help="migrate before serving (default: JACKPOT_MIGRATE_ON_START, off)",
    )
    serve.add_argument("--workers", type=int, default=1, help="server processes on one port")
    serve.set_defaults(func=cmd_serve)

    gateway = sub.add_parser("gateway", help="run the REST gateway sidecar")
    gateway.set_defaults(func=cmd_gateway)

    run = sub.add_parser("run", help="database, migrations, gRPC server and gateway together")
    run.add_argument("--workers", type=int, default=1, help="gRPC server processes")
    run.add_argument(
        "--edge",
        action="store_true",
        help="HAProxy in front of GRPC_PORT and REST_PORT, per-client limits (make run-edge)",
    )
    run.set_defaults(func=cmd_run)

    edge = sub.add_parser("edge", help="run HAProxy in front of the servers (jackpot run --edge)")
    edge.add_argument("--servers", type=int, default=1, help="server processes behind it")
    edge.set_defaults(func=cmd_edge)

    ops_commands.register(sub)  # migrate, audit and the runbook's commands
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in SERVICES:
            return run_logged(args)
        # An operator command: reports on stdout; logs go to stderr.
        configure_logging(None, stream=sys.stderr, log_format=log_format_from_env())
        code: int = args.func(Settings.from_env(), args)
        return code
    except ConfigError as exc:
        # The one place a bad setting becomes an exit code: its message alone on stderr,
        # exit 1 (as an uncaught SystemExit with that message gave, scripts rely on it).
        print(exc, file=sys.stderr)
        return 1


def run_logged(args: argparse.Namespace) -> int:
    """A service process: logging first (application.log), so that every failure to start,
    a bad setting, a port in use, a database that does not answer, is logged there before
    the process exits non-zero, where `grep ERROR` and `jackpot diagnostics` find it."""
    try:
        configure_logging(log_dir_from_env(), log_format=log_format_from_env())
    except OSError as exc:
        print(f"error: cannot open the application log: {exc}", file=sys.stderr)
        return 1
    try:
        code: int = args.func(Settings.from_env(), args)
    except ConfigError as exc:  # a setting refused, with its message
        log.error("jackpot %s failed to start: %s", args.command, exc)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log.error("jackpot %s failed: %s: %s", args.command, type(exc).__name__, exc, exc_info=exc)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
