"""`jackpot pool suspend | resume`: take a pool out of play (its amount kept) and back."""

from __future__ import annotations

import argparse
import asyncio
import getpass

import grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.domain.model import GROUP_NAMES, Group
from jackpot_grpc.ops.cli.options import Subparsers, common
from jackpot_grpc.ops.cli.shared import admin_token, emit, failing_cleanly, grpc_target
from jackpot_grpc.ops.ops_error import OpsError
from jackpot_grpc.ops.output import Section

POOL_COLUMNS = (
    "group",
    "suspended",
    "suspended_reason",
    "current_amount",
    "reserve_amount",
    "overflow_amount",
    "config_version",
)


def _lifecycle(settings: Settings, args: argparse.Namespace, *, suspend: bool) -> int:
    from jackpot_grpc.ops import config_admin

    target = grpc_target(settings, args)
    try:
        pool, event_id = asyncio.run(
            config_admin.set_suspended_grpc(
                settings,
                target,
                admin_token(settings),
                Group(args.group),
                suspend=suspend,
                actor=args.actor or getpass.getuser(),
                reason=args.reason,
                rpc_timeout=args.timeout,
            )
        )
    except grpc.aio.AioRpcError as exc:  # a refused field: name the option that set it
        from jackpot_grpc.ops.grpc_client import describe_error

        described = describe_error(exc, {"reason": "--reason", "actor": "--actor"})
        raise OpsError(f"service call failed: {described}") from None
    row = config_admin.pool_row(pool)
    done = "suspended" if suspend else "resumed"
    if event_id:
        verdict = f"{args.group} {done} (event #{event_id})"
    else:
        verdict = (
            f"{args.group} was already {'suspended' if suspend else 'in play'}: nothing written"
        )
    emit(
        args,
        {"ok": True, "event_id": event_id, "changed": bool(event_id), "pool": row},
        [Section(f"Pool ({target})", POOL_COLUMNS, [row])],
        verdict,
    )
    return 0


@failing_cleanly
def cmd_pool_suspend(settings: Settings, args: argparse.Namespace) -> int:
    return _lifecycle(settings, args, suspend=True)


@failing_cleanly
def cmd_pool_resume(settings: Settings, args: argparse.Namespace) -> int:
    return _lifecycle(settings, args, suspend=False)


def register(subparsers: Subparsers) -> None:
    pool = subparsers.add_parser(
        "pool", help="take a pool out of play and back (admin; SuspendPool / ResumePool)"
    )
    pool_sub = pool.add_subparsers(dest="pool_command", required=True)
    for name, func, reason_help in (
        ("suspend", cmd_pool_suspend, "why (required; ledgered and shown in GetPools)"),
        ("resume", cmd_pool_resume, "why (ledgered)"),
    ):
        command = pool_sub.add_parser(
            name,
            help=f"{'SuspendPool' if name == 'suspend' else 'ResumePool'}"
            " (admin; JACKPOT_TOKEN or JACKPOT_ADMIN_TOKEN)",
        )
        common(command, grpc_target=True)
        command.add_argument("group", choices=GROUP_NAMES, metavar="GROUP")
        command.add_argument("--reason", required=name == "suspend", default="", help=reason_help)
        command.add_argument("--actor", help="who (default: the login name)")
        command.set_defaults(func=func)
