"""Argument types and the options many operator commands take."""

from __future__ import annotations

import argparse
from typing import TypeAlias

# Quoted: argparse's class is generic only to type checkers.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def positive_seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def health_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--health-url",
        help="base URL of the health HTTP (default: http://localhost:HEALTH_PORT)",
    )


def common(
    parser: argparse.ArgumentParser, *, grpc_target: bool = False, health: bool = False
) -> None:
    """--json and --timeout; with grpc_target, --grpc-target; with health, the HTTP check's."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--timeout", type=positive_seconds, default=5.0, help="seconds per call")
    if grpc_target:
        parser.add_argument(
            "--grpc-target", help="host:port of the gRPC server (default: JACKPOT_GRPC_TARGET)"
        )
    if health:
        health_url_option(parser)
        parser.add_argument("--grpc-only", action="store_true", help="skip the HTTP health check")
