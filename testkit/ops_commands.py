"""The operator commands run in-process as `jackpot` would run them: parsed by argparse,
given a Settings, printing to stdout (in a worker thread when a test's loop is serving)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
from typing import Any

from jackpot_grpc.config import Settings
from jackpot_grpc.ops import cli as ops_cli


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="jackpot")
    ops_cli.register(top.add_subparsers(dest="command", required=True))
    return top


def run_ops(settings: Settings, *argv: str) -> tuple[int, str]:
    args = parser().parse_args(list(argv))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code: int = args.func(settings, args)
    return code, out.getvalue()


async def ops(settings: Settings, *argv: str) -> tuple[int, str]:
    return await asyncio.wait_for(asyncio.to_thread(run_ops, settings, *argv), timeout=60)


async def ops_json(settings: Settings, *argv: str) -> tuple[int, Any]:
    code, out = await ops(settings, *argv, "--json")
    return code, json.loads(out)


def ops_json_sync(settings: Settings, *argv: str) -> tuple[int, Any]:
    code, out = run_ops(settings, *argv, "--json")
    return code, json.loads(out)
