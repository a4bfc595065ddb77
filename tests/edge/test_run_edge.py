"""`jackpot run --edge` (make run-edge): real HAProxy in front of a real server and
gateway. Calls go through the edge over gRPC and REST; one client over its limit is
refused RESOURCE_EXHAUSTED (429 over REST) while another is served, every refusal is
counted on the edge's /metrics, and a change to the clients file reloads the edge
without a restart or a dropped connection."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.adapters import clients_file
from scripts import gen_dashboard
from testkit.database import scratch_database
from testkit.edge import Edge, running_edge
from testkit.identity import bearer
from testkit.paths import PROJECT_ROOT
from testkit.promql import selectors
from testkit.random_refs import random_key
from testkit.tools import require_tool

Stub = jackpot_pb2_grpc.JackpotServiceStub
POOLS = "/api/jackpot/pools"
BURST = 30
EDGE_MESSAGE = "edge limit: "
PROMETHEUS = PROJECT_ROOT / "deploy" / "prometheus"
SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? ", re.MULTILINE)


@dataclass
class Setup:
    edge: Edge
    clients: Path
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def setup(admin_url: str, template_database: str, tmp_path_factory: Any) -> Iterator[Setup]:
    logs = tmp_path_factory.mktemp("run_edge")
    path = logs / "clients.json"
    tokens = {name: clients_file.add_client(path, name, "game") or "" for name in ("g1", "g2")}
    limit(path, "g1", rate=10, in_flight=2)  # g1 is the one held back
    with (
        scratch_database(admin_url, "jackpot_edge", template=template_database) as url,
        running_edge(url, logs, path) as edge,
    ):
        yield Setup(edge, path, tokens)


def limit(path: Path, name: str, *, rate: int, in_flight: int) -> None:
    """Set a client's edge limits in the clients file, as an operator would by hand."""
    document = json.loads(path.read_text())
    for client in document["clients"]:
        if client["name"] == name:
            client.update(edge_rate=rate, edge_in_flight=in_flight)
    path.write_text(json.dumps(document, indent=2))


async def contribute(stub: Stub, token: str) -> str:
    """OK, or the code's name (with the message when the edge refused it)."""
    request = pb.ContributeRequest(game_id="slots", wager_amount=1000, idempotency_key=random_key())
    try:
        await stub.Contribute(request, metadata=bearer(token), timeout=10)
    except grpc.aio.AioRpcError as exc:
        edge = EDGE_MESSAGE in (exc.details() or "")
        return f"{exc.code().name}{' (edge)' if edge else ''}"
    return "OK"


async def burst(target: str, token: str, calls: int = BURST) -> Counter[str]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = Stub(channel)
        return Counter(await asyncio.gather(*(contribute(stub, token) for _ in range(calls))))


async def test_calls_go_through_the_edge_over_grpc_and_rest(setup: Setup) -> None:
    async with grpc.aio.insecure_channel(setup.edge.target) as channel:
        assert await contribute(Stub(channel), setup.tokens["g2"]) == "OK"
    headers = {"Authorization": f"Bearer {setup.tokens['g2']}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(setup.edge.rest + POOLS, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        assert (await response.json())["pools"]


async def test_a_client_over_its_limit_is_refused_while_another_is_served(setup: Setup) -> None:
    before = setup.edge.refused()
    await asyncio.sleep(0.5)
    held, served = await asyncio.gather(
        burst(setup.edge.target, setup.tokens["g1"]), burst(setup.edge.target, setup.tokens["g2"])
    )
    assert set(held) == {"OK", "RESOURCE_EXHAUSTED (edge)"}, held
    assert held["OK"] >= 1, held
    assert served == {"OK": BURST}, served
    # Every refusal is counted, by kind, on the edge's Prometheus endpoint.
    after = setup.edge.refused()
    counted = sum(after.get(k, 0) - before.get(k, 0) for k in ("grpc_rate", "grpc_in_flight"))
    assert counted == held["RESOURCE_EXHAUSTED (edge)"], (before, after)


async def test_rest_over_the_limit_is_429_with_retry_after(setup: Setup) -> None:
    headers = {"Authorization": f"Bearer {setup.tokens['g1']}"}
    async with aiohttp.ClientSession() as http:

        async def get() -> tuple[int, str | None, Any]:
            async with http.get(setup.edge.rest + POOLS, headers=headers) as response:
                return response.status, response.headers.get("Retry-After"), await response.json()

        await asyncio.sleep(0.5)  # g1's earlier calls are out of the 100 ms rate window
        before = setup.edge.refused()
        answers = await asyncio.gather(*(get() for _ in range(BURST)))
    statuses = Counter(status for status, _, _ in answers)
    assert set(statuses) == {200, 429}, statuses
    after = setup.edge.refused()
    counted = sum(after.get(k, 0) - before.get(k, 0) for k in ("rest_rate", "rest_in_flight"))
    assert counted == statuses[429], (before, after)
    refusal = next(a for a in answers if a[0] == 429)
    assert refusal[1] == "1", refusal
    assert refusal[2]["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], refusal
    assert refusal[2]["message"].startswith(EDGE_MESSAGE), refusal


async def test_the_server_and_gateway_name_the_real_caller_behind_the_edge(setup: Setup) -> None:
    """A caller at 127.0.0.2 failing authentication is blocked alone: the edge forwards its
    address (X-Forwarded-For), so the gateway and server do not blame the edge's 127.0.0.1
    for it (which would lock every client out), and the log names 127.0.0.2."""
    bad = {"Authorization": "Bearer " + "x" * 40}  # long enough, but nobody's
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    statuses: Counter[int] = Counter()
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(25):  # past the 20 failures a minute that block an address
            async with http.get(setup.edge.rest + POOLS, headers=bad) as response:
                statuses[response.status] += 1
            await asyncio.sleep(0.03)  # within the edge's anonymous rate
    assert statuses[401] >= 19 and statuses[429] >= 1, statuses
    good = {"Authorization": f"Bearer {setup.tokens['g2']}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(setup.edge.rest + POOLS, headers=good) as response,
    ):
        assert response.status == 200, await response.text()
    async with grpc.aio.insecure_channel(setup.edge.target) as channel:
        assert await contribute(Stub(channel), setup.tokens["g2"]) == "OK"
    assert "auth failure: peer=127.0.0.2" in setup.edge.output()


async def test_a_clients_file_change_reloads_the_edge_without_dropping_connections(
    setup: Setup,
) -> None:
    haproxy = [p for p in setup.edge.processes() if p.name() == "haproxy"]
    master = next(p for p in haproxy if (up := p.parent()) is None or up.name() != "haproxy")
    async with grpc.aio.insecure_channel(setup.edge.target) as channel:
        stub = Stub(channel)
        assert await contribute(stub, setup.tokens["g2"]) == "OK"  # connected before
        limit(setup.clients, "g1", rate=100_000, in_flight=1000)
        seen: Counter[str] = Counter()
        for _ in range(50):  # the edge polls the file every second: up to 10 s
            await asyncio.sleep(0.2)
            seen = await burst(setup.edge.target, setup.tokens["g1"])
            if seen == {"OK": BURST}:
                break
        assert seen == {"OK": BURST}, seen
        # The connection opened before the reload still carries calls.
        assert await contribute(stub, setup.tokens["g2"]) == "OK"
    assert master.is_running()
    assert master.pid in {p.pid for p in setup.edge.processes()}, "reloaded, not restarted"
    assert "haproxy reloaded" in setup.edge.output()


def exported(stats: str) -> dict[str, set[str]]:
    """Metric name -> label names, from HAProxy's Prometheus text."""
    with urllib.request.urlopen(f"{stats}/metrics", timeout=5) as response:
        text = response.read().decode()
    found: dict[str, set[str]] = {}
    for match in SAMPLE.finditer(text):
        labels = {pair.split("=", 1)[0] for pair in (match["labels"] or "").split(",") if pair}
        found.setdefault(match["name"], set()).update(labels)
    return found


def edge_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load((PROMETHEUS / "edge-alerts.yml").read_text())
    alerts = [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]
    panels = gen_dashboard.queries(json.loads(gen_dashboard.OUTPUT.read_text()))
    edge_panels = [(t, e) for t, e in panels if gen_dashboard.EDGE_METRIC_PREFIX in e]
    assert len(edge_panels) >= 2
    return alerts + edge_panels


def test_the_edge_alerts_and_panels_read_series_haproxy_exports(setup: Setup) -> None:
    series = exported(setup.edge.stats)
    for name, expr in edge_expressions():
        for metric, labels in selectors(expr).metrics.items():
            assert metric in series, f"{name}: HAProxy exports no {metric}"
            assert labels - {"job"} <= series[metric], f"{name}: {metric} lacks {labels}"
    promtool = require_tool("promtool", "make prometheus-tools")
    for args in (["check", "rules", "edge-alerts.yml"], ["test", "rules", "edge-alerts.test.yml"]):
        done = subprocess.run([promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
