"""`jackpot smoke`: contribute, win a little, and have the service audit its books."""

from __future__ import annotations

import argparse
import asyncio

from jackpot_grpc.config import Settings
from jackpot_grpc.ops.cli.options import Subparsers, common, health_url_option, positive_int
from jackpot_grpc.ops.cli.shared import emit, failing_cleanly, grpc_target, health_url
from jackpot_grpc.ops.errors import OpsError
from jackpot_grpc.ops.output import Section


def explicit_target(settings: Settings, args: argparse.Namespace) -> tuple[str, str | None]:
    """(gRPC target, health URL) of the instance under test, said outright when in doubt.

    Smoke never reads DATABASE_URL: with it set (the recovery recipe), the default target
    would be the live service on this host, so a target must be named (--grpc-target or
    JACKPOT_GRPC_TARGET). With --grpc-target, the books are audited by that instance, so
    its health URL must be named too (another instance's port cannot be guessed).
    """
    defaulted = args.grpc_target is None and settings.grpc_target == (
        f"localhost:{settings.grpc_port}"
    )
    if settings.database_url and defaulted:
        raise OpsError(
            "DATABASE_URL is set, but smoke tests a running service, not a database: name"
            " the instance under test with --grpc-target HOST:PORT --health-url URL"
        )
    if args.grpc_target and not args.health_url and not args.no_audit:
        raise OpsError(
            f"--grpc-target {args.grpc_target} needs --health-url (that instance's health"
            " HTTP, where it audits its own books), or --no-audit"
        )
    target = grpc_target(settings, args)
    # The service audits its own books over its health HTTP: never this shell's database.
    return target, None if args.no_audit else health_url(settings, args)


@failing_cleanly
def cmd_smoke(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops.smoke import run_smoke

    target, health = explicit_target(settings, args)
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
    emit(
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


def register(subparsers: Subparsers) -> None:
    smoke = subparsers.add_parser(
        "smoke", help="contribute, win a little, and have the service audit its books"
    )
    common(smoke, grpc_target=True)
    health_url_option(smoke)  # where the service audits its books: /health/jackpot?audit=now
    smoke.add_argument(
        "--wager", type=positive_int, default=1000, help="wager of the test contribution"
    )
    smoke.add_argument(
        "--win-amount", type=positive_int, default=1, help="test win on minor (minor units)"
    )
    smoke.add_argument(
        "--no-audit", action="store_true", help="skip the service's audit of its books"
    )
    smoke.set_defaults(func=cmd_smoke)
