"""`jackpot smoke`: contribute, win a little, and have the service audit its books."""

from __future__ import annotations

import argparse
import asyncio

from jackpot_grpc.config import Settings
from jackpot_grpc.ops.cli.options import Subparsers, common, health_url_option, positive_int
from jackpot_grpc.ops.cli.shared import emit, failing_cleanly, grpc_target, health_url
from jackpot_grpc.ops.output import Section


@failing_cleanly
def cmd_smoke(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops.smoke import run_smoke

    target = grpc_target(settings, args)
    # The service audits its own books over its health HTTP: never this shell's database.
    health = None if args.no_audit else health_url(settings, args)
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
