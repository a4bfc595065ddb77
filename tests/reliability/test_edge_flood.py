"""The flood through the edge (docs/RELIABILITY.md, "The flood through the edge").

`jackpot run --edge` with two game clients: g1 floods (100 channels × 50 closed loops of
Contribute, as in test_abuse.py's flood but half the channels, for SECONDS) while g2's
canary (testkit.canary: gRPC Contribute at 75/s and REST GET pools every 100 ms through
the edge, /health direct) measures what a legitimate client sees. Asserted: the robust
properties (the flood is answered OK or RESOURCE_EXHAUSTED only, every refusal is counted
by the layer that made it, the books balance, the canary stays ≥ 99 % OK). Latency and
throughput go to the report (testkit.figures), not into assertions: on 2 shared cores the
attacker's own CPU sets the canary's p99.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jackpot_grpc.adapters import clients_file
from testkit.attacks import run_attack
from testkit.canary import CanaryResult, canary
from testkit.database import scratch_database
from testkit.edge import Edge, running_edge
from testkit.figures import report
from testkit.ledger import check_books
from testkit.paths import PROJECT_ROOT

SECONDS = 8.0
CHANNELS, LOOPS = 100, 50
MIN_OK = 0.99
# Settings of the service and the edge to try others, e.g. EDGE_FLOOD_ENV=
# 'JACKPOT_EDGE_LIMIT_GAME=1000000/100000' (no per-client limit at all).
EDGE_FLOOD_ENV = dict(item.split("=", 1) for item in os.environ.get("EDGE_FLOOD_ENV", "").split())


@dataclass
class Stack:
    edge: Edge
    database_url: str
    tokens: dict[str, str]

    @property
    def health(self) -> str:
        return f"http://127.0.0.1:{self.edge.health_port}"


@pytest.fixture(scope="module")
def stack(admin_url: str, template_database: str, tmp_path_factory: Any) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("edge_flood")
    path = logs / "clients.json"
    tokens = {name: clients_file.add_client(path, name, "game") or "" for name in ("g1", "g2")}
    with (
        scratch_database(admin_url, "jackpot_edge_flood", template=template_database) as url,
        # Production values for what the flood aims at (service_env speeds the probe up).
        running_edge(url, logs, path, JACKPOT_HEALTH_INTERVAL="0.5", **EDGE_FLOOD_ENV) as edge,
    ):
        yield Stack(edge, url, tokens)


async def attack(*args: object, token: str | None = None) -> dict[str, Any]:
    """`python -m testkit.attacks ARGS` (as the client holding `token`); its JSON."""
    return await run_attack(*args, budget=SECONDS + 60, token=token)


async def server_refusals(stack: Stack) -> int:
    """Calls the server itself refused (admission) or gRPC core dropped."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{stack.health}/metrics") as response,
    ):
        summary: dict[str, dict[str, int]] = (await response.json())["refusals"]
    return sum(summary.get("admission", {}).values()) + sum(summary.get("grpc_core", {}).values())


def edge_refusals(edge: Edge) -> int:
    """gRPC calls the edge refused itself (over a client's limit, or a queue timeout)."""
    refused = edge.refused()
    return refused.get("grpc_rate", 0) + refused.get("grpc_in_flight", 0) + edge.queue_timeouts()


@dataclass
class Flood:
    seen: CanaryResult
    attacker: dict[str, Any]
    refused: int  # counted by the edge and the server while it ran


@pytest.fixture(scope="module")
async def flood(stack: Stack) -> Flood:
    before = edge_refusals(stack.edge) + await server_refusals(stack)
    async with canary(
        stack.edge.target, stack.edge.rest, stack.health, token=stack.tokens["g2"]
    ) as seen:
        await asyncio.sleep(0.5)  # the canary's connections are open before the flood
        attacker = await attack(
            "flood", stack.edge.target, CHANNELS, LOOPS, SECONDS, token=stack.tokens["g1"]
        )
    await asyncio.sleep(1.0)  # calls still queued are taken or dropped
    after = edge_refusals(stack.edge) + await server_refusals(stack)
    codes = Counter(attacker["codes"])
    total = sum(codes.values())
    report(
        "edge_flood",
        {
            "canary": seen.figures(),
            "attacker": attacker,
            "flood_calls_per_second": round(total / SECONDS),
            "flood_ok_per_second": round(codes["OK"] / SECONDS),
            "flood_cancelled_percent": round(100 * codes["CANCELLED"] / max(1, total), 2),
        },
    )
    return Flood(seen, attacker, after - before)


async def test_the_flood_is_answered_ok_or_resource_exhausted_and_every_refusal_counted(
    stack: Stack, flood: Flood
) -> None:
    codes = Counter(flood.attacker["codes"])
    answers = codes + flood.seen.probes[0].outcomes  # every Contribute caller through the edge
    assert codes["OK"] > 0 and codes["RESOURCE_EXHAUSTED"] > 0, codes
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes  # nothing CANCELLED
    refused = answers["RESOURCE_EXHAUSTED"] + answers["CANCELLED"]
    gave_up = answers["DEADLINE_EXCEEDED"]
    # Exactly `refused` when no call hit its deadline (the canary's 1 s can).
    assert refused <= flood.refused <= refused + gave_up, (flood.refused, answers)
    assert check_books(stack.database_url) == []


async def test_the_other_clients_canary_is_served_through_the_flood(flood: Flood) -> None:
    problems = flood.seen.failures(MIN_OK)
    assert not problems, f"canary out of bounds: {problems}"


async def test_gzip_bombs_through_the_edge_are_refused_unread(stack: Stack) -> None:
    url = f"{stack.edge.rest}/api/jackpot/contribute"
    async with canary(
        stack.edge.target, stack.edge.rest, stack.health, token=stack.tokens["g2"]
    ) as seen:
        await asyncio.sleep(0.5)
        bombs = await attack("gzip-bomb", url, SECONDS)
    report("edge_gzip_bomb", {"canary": seen.figures(), "attacker": bombs})
    assert not seen.failures(MIN_OK), seen.figures()
    # The gateway's 415 (HAProxy drops its Connection: close, and closes), or the
    # connection closed under the upload.
    answers = set(bombs["outcomes"])
    assert answers <= {"415 ", "415 close", "ClientOSError", "ServerDisconnectedError"}, bombs
    assert bombs["outcomes"].get("415 ", 0) + bombs["outcomes"].get("415 close", 0) > 0, bombs


async def test_idle_and_half_sent_connections_to_the_edge_are_closed(stack: Stack) -> None:
    port = int(stack.edge.env["REST_PORT"])
    async with canary(
        stack.edge.target, stack.edge.rest, stack.health, token=stack.tokens["g2"]
    ) as seen:
        await asyncio.sleep(0.5)
        # HAProxy's `timeout http-request` is 5 s: each waits up to 5x that.
        idle = await attack("idle", "127.0.0.1", port, 300, 25)
    report("edge_idle", {"canary": seen.figures(), "attacker": idle})
    assert not seen.failures(MIN_OK), seen.figures()
    assert idle["closed_by_server"] == 300, idle


def test_reliability_doc_has_the_edge_flood_table() -> None:
    text = (Path(PROJECT_ROOT) / "docs" / "RELIABILITY.md").read_text()
    assert "### The flood through the edge" in text
