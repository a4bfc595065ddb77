"""`jackpot smoke`: contribute, win a little (validate_only unless --write), and have the
service audit its books."""

from __future__ import annotations

import argparse
import asyncio
import sys

from jackpot_grpc.config import Settings
from jackpot_grpc.ops.cli.options import Subparsers, common, health_url_option, positive_int
from jackpot_grpc.ops.cli.shared import emit, failing_cleanly, grpc_target, health_url
from jackpot_grpc.ops.instance import is_local_instance
from jackpot_grpc.ops.ops_error import OpsError
from jackpot_grpc.ops.output import Section, progress


def instance_under_test(settings: Settings, args: argparse.Namespace) -> tuple[str, str | None]:
    """(gRPC target, health URL) of the instance under test.

    The target is --grpc-target, else JACKPOT_GRPC_TARGET, else localhost:GRPC_PORT. The
    service audits its own books over its health HTTP, so the audit must reach the same
    instance: --health-url, else, for this host's instance (a loopback host at GRPC_PORT),
    http://localhost:HEALTH_PORT. Another instance's health port cannot be guessed: it is
    refused without --health-url (or --no-audit). DATABASE_URL is never read: smoke tests
    the service it names, never this shell's database.
    """
    target = grpc_target(settings, args)
    if args.no_audit:
        return target, None
    if args.health_url or is_local_instance(target, settings.grpc.port):
        return target, health_url(settings, args)
    raise OpsError(
        f"{target} is not this host's instance (localhost:{settings.grpc.port}): name its"
        " health HTTP with --health-url URL (the instance audits its own books there),"
        " or --no-audit"
    )


WRITE_WARNING = (
    "WARNING: jackpot smoke --write MOVES REAL MONEY on {target}: it contributes a wager of"
    " {wager} and pays {win} on minor (game id smoke-test); without --write nothing is"
    " written (validate_only)"
)


@failing_cleanly
def cmd_smoke(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops.smoke import run_smoke

    target, health = instance_under_test(settings, args)
    if args.write:
        warning = WRITE_WARNING.format(target=target, wager=args.wager, win=args.win_amount)
        print(warning, file=sys.stderr, flush=True)  # never quieted by --json
    mode = "for real (--write)" if args.write else "validate only: nothing is written"
    progress(f"smoke: testing {target} ({mode}), books audited by {health or 'nobody'}")
    result = asyncio.run(
        run_smoke(
            settings,
            target,
            health,
            wager=args.wager,
            win_amount=args.win_amount,
            rpc_timeout=args.timeout,
            write=args.write,
        )
    )
    emit(
        args,
        {"ok": result.ok, "target": result.target, "write": args.write, "steps": result.steps},
        [
            Section(
                f"Smoke test of {target}" + (" (WROTE: money moved)" if args.write else ""),
                ("step", "ok", "ms", "detail"),
                [vars(s) for s in result.steps],
            )
        ],
        "smoke test passed" if result.ok else "SMOKE TEST FAILED",
    )
    return 0 if result.ok else 1


def register(subparsers: Subparsers) -> None:
    smoke = subparsers.add_parser(
        "smoke",
        help="contribute and win a little with validate_only (nothing written; --write: for"
        " real), and have the service audit its books",
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
    smoke.add_argument(
        "--write",
        action="store_true",
        help="move real money: contribute and win for real (default: validate_only)",
    )
    smoke.set_defaults(func=cmd_smoke)
