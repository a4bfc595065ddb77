"""`jackpot loadtest`: drive a running service (the runbook's `npm run test:load
--target=green`) and print its throughput, latency percentiles and errors by code."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from jackpot_grpc.config import Settings
from jackpot_grpc.ops.cli.options import Subparsers, common, positive_int, positive_seconds
from jackpot_grpc.ops.cli.shared import emit, failing_cleanly, grpc_target
from jackpot_grpc.ops.ops_error import OpsError
from jackpot_grpc.ops.output import Section, progress

if TYPE_CHECKING:
    from jackpot_grpc.ops.loadtest import LoadSpec

GRPC_KINDS = ("contribute", "get_pools", "contribute_batch", "health")
LOAD_COLUMNS = (
    "load",
    "target",
    "calls",
    "calls_per_s",
    "per_minute",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "errors",
    "error_percent",
)


def _specs(settings: Settings, args: argparse.Namespace) -> list[LoadSpec]:
    from jackpot_grpc.ops.loadtest import LoadSpec

    shared: dict[str, Any] = {
        "concurrency": args.concurrency,
        "duration": args.duration,
        "warmup": args.warmup,
        "rate": args.rate,
        "wager_amount": args.wager,
        "game_id": "loadtest",
        "idempotency_keys": not args.no_idempotency_keys,
        "call_timeout": args.timeout,
        "batch_items": args.batch_items,
        "token": settings.auth.client_token,
        "validate_only": args.validate_only,
    }
    specs = [LoadSpec(kind=args.kind, target=grpc_target(settings, args), **shared)]
    if args.rest_url:
        specs.append(LoadSpec(kind="rest_contribute", target=args.rest_url, **shared))
    return specs


def _row(summary: dict[str, Any], target: str) -> dict[str, Any]:
    latency = summary["latency_ms"]
    measured = summary["calls"] + summary["error_count"]
    return {
        "load": summary["kind"],
        "target": target,
        "calls": summary["calls"],
        "calls_per_s": summary["calls_per_s"],
        "per_minute": round(summary["calls_per_s"] * 60),
        "p50_ms": latency["p50"],
        "p95_ms": latency["p95"],
        "p99_ms": latency["p99"],
        "errors": summary["error_count"],
        "error_percent": round(100.0 * summary["error_count"] / measured, 3) if measured else 0.0,
    }


WRITE_WARNING = (
    "WARNING: --allow-writes: this load test writes REAL contributions into the ledger of"
    " {target}, whatever it holds"
)


def _guard_writes(settings: Settings, args: argparse.Namespace, specs: list[LoadSpec]) -> None:
    """A load that would write goes ahead only into an empty ledger, or with --allow-writes
    (said loudly). The ledger is the gRPC target's; --rest-url is taken to front it."""
    from jackpot_grpc.ops.ledger_guard import refuse_writes_into_a_used_ledger
    from jackpot_grpc.ops.loadtest import WRITE_KINDS

    target = grpc_target(settings, args)
    if args.validate_only and not any(s.kind in WRITE_KINDS for s in specs):
        # Ignored, it would let a read load pass for a check of the write path.
        raise OpsError(
            f"--validate-only applies to writes, and --kind {args.kind} only reads: use"
            " --kind contribute (or contribute_batch, or --rest-url) to test the write path"
        )
    if any(s.kind in WRITE_KINDS and s.validate_only for s in specs):
        asyncio.run(_require_validate_only(settings, target, args.timeout))
    if not any(s.kind in WRITE_KINDS and not s.validate_only for s in specs):
        return
    if args.allow_writes:
        print(WRITE_WARNING.format(target=target), file=sys.stderr, flush=True)
        return
    asyncio.run(refuse_writes_into_a_used_ledger(settings, target, args.timeout))


async def _require_validate_only(settings: Settings, target: str, rpc_timeout: float) -> None:
    """--validate-only against a server that would drop the field is refused (it would
    write). --rest-url is taken to front the same server release."""
    from jackpot_grpc.ops.grpc_client import channel
    from jackpot_grpc.ops.server_features import require_validate_only

    async with channel(settings, target) as chan:
        await require_validate_only(chan, target, rpc_timeout, for_real="--allow-writes")


@failing_cleanly
def cmd_loadtest(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops.loadtest import run_load

    loads: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    specs = _specs(settings, args)
    _guard_writes(settings, args, specs)
    for spec in specs:
        mode = f"{spec.rate:g} calls/s (open loop)" if spec.rate else "closed loop"
        dry = " (validate_only: nothing written)" if spec.validate_only else ""
        progress(
            f"loadtest: {spec.kind}{dry} on {spec.target}, {mode}, {spec.concurrency} in"
            f" flight, {spec.warmup:g} s warm-up + {spec.duration:g} s"
        )
        summary = asyncio.run(run_load(spec)).summary()
        loads.append({**_row(summary, spec.target), "summary": summary})
        errors += [
            {"load": spec.kind, "code": code, "count": count}
            for code, count in sorted(summary["errors"].items())
        ]
    problems = [
        f"{load['load']}: {load['error_percent']}% errors"
        for load in loads
        if load["error_percent"] > args.max_error_percent
    ] + [f"{load['load']}: no successful call" for load in loads if not load["calls"]]
    emit(
        args,
        {"ok": not problems, "problems": problems, "loads": loads, "errors": errors},
        [
            Section("Load test", LOAD_COLUMNS, loads),
            Section("Errors by code", ("load", "code", "count"), errors, note="none"),
        ],
        "load test passed" if not problems else "LOAD TEST FAILED: " + "; ".join(problems),
    )
    return 0 if not problems else 1


def register(subparsers: Subparsers) -> None:
    load = subparsers.add_parser(
        "loadtest", help="drive a running service; throughput, p50/p95/p99, errors by code"
    )
    common(load, grpc_target=True)
    load.add_argument("--rest-url", help="also POST /api/jackpot/contribute on this gateway")
    load.add_argument("--duration", type=positive_seconds, default=30.0, help="measured seconds")
    load.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    load.add_argument(
        "--rate", type=positive_seconds, help="calls per second (open loop); default: closed loop"
    )
    load.add_argument(
        "--concurrency", type=positive_int, default=16, help="calls in flight (at most)"
    )
    load.add_argument("--kind", choices=GRPC_KINDS, default="contribute", help="gRPC call")
    load.add_argument("--batch-items", type=positive_int, default=100, help="contribute_batch")
    load.add_argument("--wager", type=positive_int, default=1000, help="wager (minor units)")
    load.add_argument("--no-idempotency-keys", action="store_true", help="send calls without keys")
    load.add_argument(
        "--validate-only",
        action="store_true",
        help="send the writes with validate_only: every check runs, nothing is written",
    )
    load.add_argument(
        "--allow-writes",
        action="store_true",
        help="write real contributions even into a ledger that holds rows (refused otherwise)",
    )
    load.add_argument(
        "--max-error-percent", type=float, default=1.0, help="fail above this error rate"
    )
    load.set_defaults(func=cmd_loadtest)
