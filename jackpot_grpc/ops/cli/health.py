"""`jackpot health`: gRPC health and HTTP /health of a running service."""

from __future__ import annotations

import argparse
import asyncio

from jackpot_grpc.config import Settings
from jackpot_grpc.ops.cli.options import Subparsers, common
from jackpot_grpc.ops.cli.shared import (
    HEALTH_COLUMNS,
    emit,
    failing_cleanly,
    grpc_target,
    health_base,
)
from jackpot_grpc.ops.output import Section


@failing_cleanly
def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops.health_check import run_checks

    checks = asyncio.run(
        run_checks(settings, grpc_target(settings, args), health_base(settings, args), args.timeout)
    )
    healthy = all(c.healthy for c in checks)
    failing = ", ".join(f"{c.check}: {c.status}" for c in checks if not c.healthy)
    emit(
        args,
        {"healthy": healthy, "checks": checks},
        [Section("Service health", HEALTH_COLUMNS, [vars(c) for c in checks])],
        "healthy" if healthy else f"UNHEALTHY ({failing})",
    )
    return 0 if healthy else 1


def register(subparsers: Subparsers) -> None:
    health = subparsers.add_parser(
        "health", help="gRPC health and HTTP /health of a running service"
    )
    common(health, grpc_target=True, health=True)
    health.set_defaults(func=cmd_health)
