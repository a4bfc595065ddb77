"""GET /metrics on the public REST port, over real HTTP to a real gateway and server.

The REST port is reachable by anyone who can call the API, with or without a token: its
/metrics answers the request figures as JSON only (never the Prometheus text with pool
gauges, never the health port's operator extras), and a period reads the stored history
the way the health port does, through the shared, rate-limited on-demand read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from jackpot_grpc.gateway.app import RunningGateway, create_gateway_app, start_gateway
from testkit.identity import bearer, secured

# What the JSON on the health port carries for operators only (or may, per process).
OPERATOR_KEYS = ("refusals", "history")


async def _gateway(running: RunningServer, max_body_bytes: int) -> RunningGateway:
    app = create_gateway_app(
        f"127.0.0.1:{running.port}",
        max_body_bytes=max_body_bytes,
        metrics_url=f"http://127.0.0.1:{running.health_port}/metrics",
        call_timeout=5.0,
    )
    return await start_gateway(app, "127.0.0.1", 0, shutdown_timeout=1.0)


@pytest.fixture
def closed_settings(settings: Settings, tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    """Closed (a clients file), with the production interval between history reads."""
    closed, tokens = secured(settings, tmp_path, failure_limit=1000)
    return dataclasses.replace(
        closed, health=dataclasses.replace(closed.health, on_demand_interval=10.0)
    ), tokens


@pytest.fixture
async def stack(
    closed_settings: tuple[Settings, dict[str, str]], database_url: str
) -> AsyncIterator[tuple[RunningServer, str, str]]:
    """(the server, the gateway's base URL, the health port's base URL)."""
    settings, _ = closed_settings
    running = await start_server(settings, database_url, port=0)
    gateway = await _gateway(running, settings.gateway.max_body_bytes)
    yield running, f"http://127.0.0.1:{gateway.port}", f"http://127.0.0.1:{running.health_port}"
    await gateway.stop()
    await running.stop(grace=1.0)


async def _get(url: str, **kwargs: Any) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.get(url, **kwargs) as response:
        return response.status, response.content_type, await response.text()


@pytest.mark.parametrize(
    "accept",
    [
        "text/plain",
        "application/openmetrics-text; version=1.0.0",
        "text/plain;version=0.0.4;q=0.9,*/*;q=0.1",
        "*/*",
        None,
    ],
)
async def test_public_metrics_are_json_only_without_pool_gauges(
    stack: tuple[RunningServer, str, str], accept: str | None
) -> None:
    _, base, health = stack
    headers = {} if accept is None else {"Accept": accept}
    # The health port does serve Prometheus text (with the pool gauges) to whoever asks:
    # it is the private port. The public one must not.
    status, content_type, text = await _get(health + "/metrics", headers={"Accept": "text/plain"})
    assert (status, content_type) == (200, "text/plain")
    assert "jackpot_pool_current_amount_minor_units" in text
    for path in ("/metrics", "/metrics?period=5m"):
        status, content_type, text = await _get(base + path, headers=headers)
        assert (status, content_type) == (200, "application/json"), text[:300]
        assert "jackpot_pool" not in text and "# HELP" not in text
        summary = json.loads(text)
        assert "total_requests" in summary and "response_times" in summary
        assert not set(OPERATOR_KEYS) & set(summary), summary.keys()


async def test_public_metrics_take_only_the_period(stack: tuple[RunningServer, str, str]) -> None:
    _, base, _ = stack
    status, _, text = await _get(base + "/metrics?period=30d&source=memory")
    assert status == 400 and "source" in text
    status, _, text = await _get(base + "/metrics?period=1y")
    assert status == 400 and "period" in text


def _counting(running: RunningServer) -> list[str]:
    """Every read of the stored history the server makes, by period (a spy on the real
    sampler: the reads still happen)."""
    sampler = running.sampler
    assert sampler is not None
    reads: list[str] = []
    real: Callable[[str], Awaitable[dict[str, Any]]] = sampler.window_summary

    async def window_summary(period: str) -> dict[str, Any]:
        reads.append(period)
        return await real(period)

    sampler.window_summary = window_summary  # type: ignore[method-assign]
    return reads


async def test_public_metrics_read_the_history_at_most_once_per_interval(
    stack: tuple[RunningServer, str, str],
) -> None:
    running, base, _ = stack
    reads = _counting(running)

    async def ask(period: str) -> int:
        status, _, _ = await _get(f"{base}/metrics?period={period}")
        return status

    # 40 callers at once, then 20 one after another, each asking a month of history:
    # one read, shared (JACKPOT_ON_DEMAND_INTERVAL is 10 s here; the test takes ~2 s).
    statuses = await asyncio.gather(*(ask("30d") for _ in range(40)))
    statuses += [await ask("30d") for _ in range(20)]
    assert set(statuses) == {200}
    assert 1 <= reads.count("30d") <= 2, reads
    assert set(reads) == {"30d"}


async def _calls(running: RunningServer, token: str, contribute: int, pools: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
        for _ in range(contribute):
            await stub.Contribute(
                pb.ContributeRequest(game_id="slots", wager_amount=1000), metadata=bearer(token)
            )
        for _ in range(pools):
            await stub.GetPools(pb.GetPoolsRequest(), metadata=bearer(token))


async def test_the_runbooks_monthly_curl_answers_the_stored_month_after_a_restart(
    closed_settings: tuple[Settings, dict[str, str]], database_url: str
) -> None:
    """`curl http://localhost:3000/metrics?period=30d` = the health port's 30d answer."""
    settings, tokens = closed_settings
    first = await start_server(settings, database_url, port=0)
    try:
        await _calls(first, tokens["game"], contribute=4, pools=3)
    finally:
        await first.stop(grace=1.0)  # writes the last, partial minute

    second = await start_server(settings, database_url, port=0)
    gateway = await _gateway(second, settings.gateway.max_body_bytes)
    try:
        health = f"http://127.0.0.1:{second.health_port}/metrics?period=30d"
        status, _, text = await _get(health)
        assert status == 200
        private = json.loads(text)
        assert (private["source"], private["total_requests"]) == ("database", 7)

        status, content_type, text = await _get(
            f"http://127.0.0.1:{gateway.port}/metrics?period=30d"
        )
        assert (status, content_type) == (200, "application/json")
        public = json.loads(text)
        assert (public["source"], public["period"], public["total_requests"]) == (
            "database",
            "30d",
            7,
        )
        # The same figures: the health port's read, shared within the interval.
        assert public == {k: v for k, v in private.items() if k not in OPERATOR_KEYS}
    finally:
        await gateway.stop()
        await second.stop(grace=1.0)


@pytest.fixture
async def slow_upstream() -> AsyncIterator[tuple[str, list[int]]]:
    """Stands in for the health port's /metrics, slow to answer: (its URL, how many
    requests it held at once, each time one arrived)."""
    waiting: list[int] = []
    in_flight = 0

    async def summary(request: web.Request) -> web.Response:
        nonlocal in_flight
        in_flight += 1
        waiting.append(in_flight)
        try:
            await asyncio.sleep(1.0)
        finally:
            in_flight -= 1
        return web.json_response({"total_requests": 1, "period": request.query.get("period")})

    app = web.Application()
    app.router.add_get("/metrics", summary)
    running = await start_gateway(app, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{running.port}/metrics", waiting
    await running.stop()


async def test_a_flood_of_public_metrics_reaches_the_health_port_once_per_period(
    slow_upstream: tuple[str, list[int]],
) -> None:
    """The health port paces its requests (20/s beyond /health) for everyone: Prometheus'
    scrape and the operators' checks must not wait behind a flood sent to the public port.
    Callers of one period share the request in flight; a bad period never leaves."""
    url, waiting = slow_upstream
    app = create_gateway_app("127.0.0.1:9", max_body_bytes=4096, metrics_url=url, call_timeout=5.0)
    gateway = await start_gateway(app, "127.0.0.1", 0, shutdown_timeout=1.0)
    base = f"http://127.0.0.1:{gateway.port}"
    try:
        asks = [f"{base}/metrics?period={p}" for p in ("5m", "30d") for _ in range(50)]
        asks += [f"{base}/metrics" for _ in range(50)]
        asks += [f"{base}/metrics?period=p{n}" for n in range(50)]
        answers = await asyncio.gather(*(_get(ask) for ask in asks))
    finally:
        await gateway.stop()
    statuses = [status for status, _, _ in answers]
    assert statuses == [200] * 150 + [400] * 50
    assert max(waiting) <= 3, waiting  # one per period asked: 5m, 30d, since start
    # 150 callers at once: about 3 requests (5x slack for callers arriving after a reply).
    assert len(waiting) <= 15, waiting
