"""`make bench`: one run, fresh databases, every scenario, the ratios the targets ask for.

    .venv/bin/python -m bench.run [--duration 5] [--concurrency 64] [--quick] [--profile out.svg]

The server runs as a subprocess (`jackpot serve`) on a fresh migrated database; the load
generator runs in its own spawned process (bench.loadgen). Everything started here is
stopped in `finally` blocks, Ctrl-C included. Results go to bench/results/latest.json.

This module is the command line; bench.orchestrate runs the sequence, bench.scenarios
says what each scenario does, bench.report prints and writes the results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import orchestrate
from bench.console import log

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, help="measured seconds per scenario (default 5)")
    p.add_argument("--warmup", type=float, help="unmeasured seconds before each (default 1)")
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight (default 64)")
    p.add_argument(
        "--batch-concurrency",
        type=int,
        default=4,
        help="ContributeBatch calls in flight (default 4; each carries --batch-items)",
    )
    p.add_argument("--batch-items", type=int, default=1000, help="items per ContributeBatch")
    p.add_argument(
        "--rss-contributions",
        type=int,
        help="contributions sent between the two RSS readings (default 1,000,000; quick 100,000)",
    )
    p.add_argument(
        "--channels",
        type=int,
        help="gRPC channels (TCP connections) per load generator (default 1; 4 per server worker)",
    )
    p.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="`jackpot serve --workers N` (SO_REUSEPORT processes; default 1)",
    )
    p.add_argument(
        "--scaling-workers",
        type=int,
        default=2,
        help="also run Contribute against `serve --workers N` to show scaling (default 2; 1: skip)",
    )
    p.add_argument("--idempotency-keys", action="store_true", help="a unique key on every item")
    p.add_argument("--quick", action="store_true", help="2 s scenarios, 100,000 for the RSS run")
    p.add_argument("--no-gateway", action="store_true", help="skip the REST scenario")
    p.add_argument("--no-edge", action="store_true", help="skip Contribute through HAProxy")
    p.add_argument(
        "--no-grpcjs",
        action="store_true",
        help="skip the grpc-js probe (bench/grpcjs; skipped anyway without node and npm)",
    )
    p.add_argument(
        "--database",
        default="auto",
        help="auto (system PostgreSQL, else embedded), system, embedded, or an admin URL",
    )
    p.add_argument(
        "--profile",
        type=Path,
        help="py-spy record the server during Contribute(batching) into this file (.svg/.txt)",
    )
    p.add_argument(
        "--audit-rows", type=int, help="contributions in the audit scenario (default 1,000,000)"
    )
    p.add_argument(
        "--ledger-ab-rounds",
        type=int,
        default=2,
        help="rounds of the ledger A/B (checkpoint signer off, then on; default 2; 0: skip)",
    )
    p.add_argument(
        "--only-ledger",
        action="store_true",
        help="run only the ledger A/B and the audit scenario",
    )
    p.add_argument(
        "--watchers", type=int, help="WatchPools gRPC watchers (default 10,000; quick 1,000)"
    )
    p.add_argument(
        "--sse-watchers", type=int, help="WatchPools SSE watchers (default 1,000; quick 100)"
    )
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = p.parse_args(argv)
    if args.audit_rows is None:
        args.audit_rows = 100_000 if args.quick else 1_000_000
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    if args.watchers is None:
        args.watchers = 1_000 if args.quick else 10_000
    if args.sse_watchers is None:
        args.sse_watchers = 100 if args.quick else 1_000
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    if args.channels is None:
        args.channels = 1 if args.server_workers <= 1 else 4 * args.server_workers
    if args.rss_contributions is None:
        args.rss_contributions = 100_000 if args.quick else 1_000_000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return orchestrate.run(args)
    except KeyboardInterrupt:
        log("interrupted; every process started here has been stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
