"""Hostile traffic cannot take the service down (docs/RELIABILITY.md, "Abuse").

Each abuse runs from loopback in a process of its own (testkit.attacks) for a bounded
time against `jackpot serve` and `jackpot gateway` child processes, while a canary
(testkit.canary: gRPC Contribute at 75/s, REST GET pools every 100 ms, /health every
250 ms) measures what legitimate callers see. Each asserts the canary stayed at ≥ 99 % OK
(a request over 1 s fails), and what the abuse itself was answered; the canary's latency
percentiles go to the report (testkit.figures), not into an assertion.
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

from jackpot_grpc.config import Settings
from testkit.attacks import run_attack
from testkit.canary import CanaryResult, canary
from testkit.database import scratch_database
from testkit.figures import report
from testkit.ledger import check_books
from testkit.paths import PROJECT_ROOT
from testkit.processes import ServiceProcess, base_url, serving, start_gateway

SECONDS = 8.0  # each abuse runs this long
MIN_OK = 0.99
ABUSE_ENV = dict(item.split("=", 1) for item in os.environ.get("ABUSE_ENV", "").split() if item)
# How long the health port keeps an idle connection open (the idle abuse waits on it).
KEEPALIVE = Settings.from_env(ABUSE_ENV).http.keepalive_timeout


@dataclass
class Stack:
    database_url: str
    serve: ServiceProcess
    gateway: ServiceProcess

    @property
    def health(self) -> str:
        return f"http://127.0.0.1:{self.serve.health_port}"

    @property
    def rest(self) -> str:
        return base_url(self.gateway)


@pytest.fixture(scope="module")
def stack(admin_url: str, template_database: str, tmp_path_factory: Any) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("abuse")
    with (
        scratch_database(admin_url, "jackpot_abuse", template=template_database) as url,
        # Production values for what the abuses aim at (service_env speeds the probe up).
        serving(url, logs, JACKPOT_HEALTH_INTERVAL="0.5", **ABUSE_ENV) as serve,
    ):
        gateway = start_gateway(serve, logs)
        try:
            yield Stack(url, serve, gateway)
        finally:
            gateway.stop()


async def attack(*args: object, budget: float = SECONDS + 60) -> dict[str, Any]:
    """Run `python -m testkit.attacks ARGS` to its end (killed past `budget`); its JSON."""
    return await run_attack(*args, budget=budget)


async def under(stack: Stack, *attacks: tuple[object, ...]) -> tuple[CanaryResult, list[Any]]:
    async with canary(stack.serve.target, stack.rest, stack.health) as seen:
        await asyncio.sleep(0.5)  # the canary's connections are open before the abuse
        results = await asyncio.gather(*(attack(*a) for a in attacks))
    return seen, list(results)


async def refusals(stack: Stack) -> dict[str, dict[str, int]]:
    async with aiohttp.ClientSession() as http, http.get(f"{stack.health}/metrics") as response:
        summary: dict[str, dict[str, int]] = (await response.json())["refusals"]
        return summary


def canary_problems(name: str, seen: CanaryResult, attacker: Any) -> list[str]:
    """Reports the canary's figures (latency included) and the attacker's; what broke."""
    report(f"abuse_{name}", {"canary": seen.figures(), "attacker": attacker})
    return seen.failures(MIN_OK)


def check_canary(name: str, seen: CanaryResult, attacker: Any) -> None:
    problems = canary_problems(name, seen, attacker)
    assert not problems, f"{name}: canary out of bounds: {problems}"


class FloodOutrunsTheServer(AssertionError):
    """The documented failure of the closed-loop flood: the canary falls under its bound,
    or more than 1 % of the flood is shed otherwise than RESOURCE_EXHAUSTED (CANCELLED by
    gRPC core); see docs/RELIABILITY.md, "The flood, and what is left"."""


async def test_probe_failures_the_database_did_not_cause_turn_nobody_away(stack: Stack) -> None:
    before = await refusals(stack)
    seen, (attacker,) = await under(stack, ("kill-probe", stack.database_url, SECONDS))
    after = await refusals(stack)
    check_canary("probe_failures", seen, attacker)
    assert attacker["probe_connections_killed"] >= 5, attacker
    turned_away = after.get("admission", {}).get("database_unavailable", 0)
    assert turned_away == before.get("admission", {}).get("database_unavailable", 0), after


async def test_fifty_clients_auditing_on_demand_share_one_audit(stack: Stack) -> None:
    url = f"{stack.health}/health/jackpot?audit=now"
    seen, (attacker,) = await under(stack, ("audit-flood", url, 50, SECONDS))
    check_canary("audit_flood", seen, attacker)
    assert set(attacker["outcomes"]) == {"200"}, attacker
    # At most one audit per JACKPOT_ON_DEMAND_INTERVAL (10 s): every other request
    # shared a running one or got the last result with its age.
    assert attacker["audit_now"].get("ran", 0) <= 2, attacker
    assert sum(attacker["audit_now"].values()) >= 100, attacker


async def test_gzip_bombs_are_refused_unread(stack: Stack) -> None:
    seen, results = await under(
        stack,
        ("gzip-bomb", f"{stack.health}/health", SECONDS),
        ("gzip-bomb", f"{stack.rest}/api/jackpot/contribute", SECONDS),
    )
    check_canary("gzip_bomb", seen, results)
    for result in results:
        answers = result["outcomes"]
        # The refusal (415 and Connection: close) came before the upload could finish, or
        # the client saw the connection closed under its upload.
        assert set(answers) <= {"415 close", "ClientOSError", "ServerDisconnectedError"}, result
        assert result["answer_ms"]["p99"] < 1000, result


@dataclass
class Flood:
    seen: CanaryResult
    attacker: dict[str, Any]
    refused: int  # counted by every layer while it ran


@pytest.fixture(scope="module")
async def flood(stack: Stack) -> Flood:
    """One flood for the two tests below: what is counted, and what the canary saw."""
    before = refused_in_all(await refusals(stack))
    seen, (attacker,) = await under(stack, ("flood", stack.serve.target, 200, 50, SECONDS))
    await asyncio.sleep(1.0)  # calls still queued in core are taken or dropped
    return Flood(seen, attacker, refused_in_all(await refusals(stack)) - before)


def refused_in_all(summary: dict[str, dict[str, int]]) -> int:
    return sum(summary.get("admission", {}).values()) + sum(summary.get("grpc_core", {}).values())


async def test_every_call_a_flood_is_refused_is_counted(stack: Stack, flood: Flood) -> None:
    # The server's Contribute callers while the flood ran: the attacker and the canary.
    answers = Counter(flood.attacker["codes"]) + flood.seen.probes[0].outcomes
    assert answers["OK"] > 0, flood.attacker
    # Each refusal was answered, and each answer counted once, whichever layer turned the
    # call away: admission (RESOURCE_EXHAUSTED) or gRPC core (dropped before the server
    # took it: CANCELLED). The one thing a client cannot tell is what became of a call it
    # gave up on at its deadline (the server refused it later, or served it late).
    refused = answers["RESOURCE_EXHAUSTED"] + answers["CANCELLED"]
    gave_up = answers["DEADLINE_EXCEEDED"]
    assert set(answers) <= {"OK", "RESOURCE_EXHAUSTED", "CANCELLED", "DEADLINE_EXCEEDED"}, answers
    # The canary's REST probe is a GetPools call of the gateway's on the same server: core
    # drops those too, the probe sees them as 499 (CANCELLED), and the server counts them.
    rest = flood.seen.probes[1]
    assert rest.name == "rest_pools"
    refused += rest.outcomes["HTTP 499"]
    gave_up += sum(n for outcome, n in rest.outcomes.items() if outcome not in ("OK", "HTTP 499"))
    # Exactly `refused` when no call hit its deadline.
    assert refused <= flood.refused <= refused + gave_up, (flood.refused, answers, rest.outcomes)
    assert check_books(stack.database_url) == []


@pytest.mark.xfail(
    reason="10,000 closed-loop calls outrun what one grpc.aio process takes from gRPC core"
    " (about 2,000-3,000 a second on 2 shared cores): the canary's calls wait behind them in"
    " core's queue, and core drops calls past 1,000 waiting as CANCELLED; see RELIABILITY.md",
    raises=FloodOutrunsTheServer,  # anything else failing here is a real failure
)
async def test_an_overload_flood_leaves_the_canary_served_and_is_answered_resource_exhausted(
    flood: Flood,
) -> None:
    problems = canary_problems("overload_flood", flood.seen, flood.attacker)
    # Overload answers are RESOURCE_EXHAUSTED, not calls cancelled in a queue.
    codes = flood.attacker["codes"]
    shed_otherwise = sum(n for code, n in codes.items() if code not in ("OK", "RESOURCE_EXHAUSTED"))
    if shed_otherwise > 0.01 * sum(codes.values()):
        problems.append(f"{shed_otherwise} calls shed otherwise than RESOURCE_EXHAUSTED: {codes}")
    if problems:
        raise FloodOutrunsTheServer(problems)


async def test_idle_and_half_sent_connections_are_closed(stack: Stack) -> None:
    port = stack.serve.health_port
    # Each connection waits up to 5× the keep-alive timeout for the server to close it (the
    # attack ends as soon as all are closed: about one keep-alive timeout when they are).
    window = 5 * KEEPALIVE
    seen, (attacker,) = await under(stack, ("idle", "127.0.0.1", port, 300, window))
    check_canary("idle_connections", seen, attacker)
    # Over the cap (256) answered 503 at once; the rest closed at the keep-alive timeout
    # (5 s), whether they sent nothing or half a request: none was left open by the server.
    # (With aiohttp's listen backlog of 128 the burst overflowed the accept queue and some
    # handshakes were retried seconds later; see tests/integration/test_http_site.py.)
    assert attacker["closed_by_server"] + attacker["refused"] == 300, attacker
    assert attacker["answered_503"] >= 1, attacker  # 44 over the cap, less any overshoot


def test_reliability_doc_has_the_abuse_table() -> None:
    text = (Path(PROJECT_ROOT) / "docs" / "RELIABILITY.md").read_text()
    for probe in ("kill-probe", "audit-flood", "gzip-bomb", "flood", "idle"):
        assert f"`{probe}`" in text, probe
