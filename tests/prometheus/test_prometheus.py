"""The alert rules, recording rules and dashboard against a real Prometheus.

Debian's `prometheus` (installed by .ci/run and `make prometheus-tools`) scrapes a running
server's /metrics/prometheus every second while a short load runs; then every rule must
load and evaluate without error and read only series the service exports, every dashboard
query must return data, and promtool's own checks and unit tests must pass. Skipped, saying
why, only where the binaries are missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from jackpot_grpc.observability.telemetry import setup_telemetry
from scripts import gen_dashboard
from testkit.database import unique_name
from testkit.identity import bearer, secured
from testkit.paths import PROJECT_ROOT
from testkit.promql import selectors
from testkit.scratch import create_database, drop_database
from testkit.tools import find_tool, require_tool

RULES_DIR = PROJECT_ROOT / "deploy" / "prometheus"
RULE_FILES = sorted(p for p in RULES_DIR.glob("jackpot-*.yml") if not p.name.endswith(".test.yml"))
UNIT_TESTS = sorted(RULES_DIR.glob("*.test.yml"))
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "jackpot-dashboard.json"
PROMETHEUS = find_tool("prometheus")
PROMTOOL = find_tool("promtool")
LOAD_SECONDS = 6.0


@pytest.fixture(scope="module", autouse=True)
def _prometheus_installed() -> None:
    for tool in ("prometheus", "promtool"):
        require_tool(tool, "`make prometheus-tools`: apt-get install prometheus")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rules() -> list[dict[str, Any]]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            found.extend(group["rules"])
    return found


def recorded_names() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


# --- promtool ------------------------------------------------------------------------------


def test_promtool_checks_every_rule_file() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", *map(str, RULE_FILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert {p.name for p in RULE_FILES} == {"jackpot-alerts.yml", "jackpot-recording.yml"}


def test_promtool_unit_tests_fire_and_resolve_every_alert() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", *(p.name for p in UNIT_TESTS)],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    fired: set[str] = set()
    resolved: set[str] = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", ()):
                (fired if check.get("exp_alerts") else resolved).add(check["alertname"])
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert alerts - fired == set(), "alerts no unit test makes fire"
    assert alerts - resolved == set(), "alerts no unit test sees resolve"


def test_rules_follow_the_conventions() -> None:
    for rule in rules():
        if "alert" in rule:
            assert rule["annotations"]["runbook_url"].startswith("docs/OPERATIONS.md#")
        else:
            assert rule["record"].count(":") == 2, rule["record"]  # level:metric:operations
    exprs = [" ".join(r["expr"].split()) for r in rules()]
    assert 'absent(up{job="jackpot"})' in exprs and 'up{job="jackpot"} == 0' in exprs
    # every recording rule is read by a rule or a dashboard panel
    dashboard_exprs = " ".join(
        e for _, e in gen_dashboard.queries(json.loads(DASHBOARD.read_text()))
    )
    assert all(name in " ".join(exprs) + dashboard_exprs for name in recorded_names())


# --- a real Prometheus scraping a real server -----------------------------------------------


@dataclasses.dataclass
class Scraped:
    server: RunningServer
    api: str  # http://127.0.0.1:PORT/api/v1
    http: aiohttp.ClientSession

    async def get(self, path: str, **params: Any) -> Any:
        async with self.http.get(f"{self.api}/{path}", params=params) as response:
            body = await response.json()
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.get("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result


def prometheus_config(health_port: int) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [
            {
                "job_name": "jackpot",
                "metrics_path": "/metrics/prometheus",
                "static_configs": [{"targets": [f"127.0.0.1:{health_port}"]}],
            }
        ],
    }


@pytest.fixture(scope="module")
def module_database(admin_url: str, template_database: str) -> Iterator[str]:
    name = unique_name("jackpot_prom")
    yield create_database(admin_url, name, template=template_database)
    drop_database(admin_url, name)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prometheus")


async def drive_load(server: RunningServer, tokens: dict[str, str]) -> None:
    """Contributions (batched), wins, reads and a few refused calls, for LOAD_SECONDS."""
    game = bearer(tokens["game"])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = jackpot_pb2_grpc.JackpotServiceStub(channel)

        async def contributor(n: int) -> None:
            end = time.monotonic() + LOAD_SECONDS
            while time.monotonic() < end:
                await stub.Contribute(
                    pb.ContributeRequest(game_id=f"g{n}", wager_amount=10_000), metadata=game
                )

        async def others() -> None:
            end = time.monotonic() + LOAD_SECONDS
            while time.monotonic() < end:
                await stub.GetPools(pb.GetPoolsRequest(), metadata=game)
                await stub.GetStatistics(pb.GetStatisticsRequest(), metadata=game)
                await stub.Win(
                    pb.WinRequest(
                        group=pb.JACKPOT_GROUP_MINOR,
                        game_id="prom",
                        user_id=str(uuid.uuid4()),
                        win_amount=1,
                    ),
                    metadata=game,
                )
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.Contribute(
                        pb.ContributeRequest(game_id="", wager_amount=1), metadata=game
                    )
                await asyncio.sleep(0.05)

        await stub.UpdateConfig(
            pb.UpdateConfigRequest(group=pb.JACKPOT_GROUP_MINOR, seed_amount=1000, actor="prom"),
            metadata=bearer(tokens["admin"]),
        )
        await asyncio.gather(*(contributor(n) for n in range(8)), others())


@pytest.fixture(scope="module")
async def scraped(module_database: str, workdir: Path) -> AsyncIterator[Scraped]:
    # Closed, as in production: a client per role, so the calls carry their tokens.
    defaults = Settings.from_env({})
    local = dataclasses.replace(
        defaults,
        grpc=dataclasses.replace(defaults.grpc, host="127.0.0.1"),
        health=dataclasses.replace(defaults.health, host="127.0.0.1", port=0, probe_interval=0.2),
        database=dataclasses.replace(defaults.database, pool_min_size=1, pool_max_size=8),
        process=dataclasses.replace(defaults.process, drain_delay=0.0, log_dir=workdir / "logs"),
    )
    settings, tokens = secured(local, workdir)
    telemetry = setup_telemetry(environ={})  # the business counters reach /metrics/prometheus
    server = await start_server(settings, module_database, port=0, telemetry=telemetry)
    assert server.auditor is not None
    await server.auditor.run_once()  # the ledger gauges exist once an audit has run
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(server.health_port)))
    assert PROMETHEUS is not None
    log = (workdir / "prometheus.log").open("w")
    process = await asyncio.create_subprocess_exec(
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            scraped = Scraped(server, f"http://127.0.0.1:{port}/api/v1", http)
            await wait_ready(http, port, process, workdir)
            await drive_load(server, tokens)
            await wait_for_series(scraped)
            yield scraped
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()
        await server.stop(grace=1.0)
        telemetry.shutdown()


async def wait_ready(
    http: aiohttp.ClientSession, port: int, process: asyncio.subprocess.Process, workdir: Path
) -> None:
    for _ in range(150):
        assert process.returncode is None, (workdir / "prometheus.log").read_text()
        try:
            async with http.get(f"http://127.0.0.1:{port}/-/ready") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    pytest.fail("Prometheus did not become ready: " + (workdir / "prometheus.log").read_text())


async def wait_for_series(scraped: Scraped) -> None:
    """Until every recording rule has a sample from this load (rates need two scrapes)."""
    missing = recorded_names()
    for _ in range(60):
        missing = {name for name in missing if not await scraped.query(name)}
        if not missing:
            return
        await asyncio.sleep(0.5)
    pytest.fail(f"recording rules without data after the load: {sorted(missing)}")


async def test_every_rule_loads_and_evaluates_without_error(scraped: Scraped) -> None:
    data = await scraped.get("rules")
    loaded = {rule["name"]: rule for group in data["groups"] for rule in group["rules"]}
    expected = {r.get("alert") or r["record"] for r in rules()}
    assert set(loaded) == expected
    await asyncio.sleep(1.5)  # one more evaluation after the load
    data = await scraped.get("rules")
    for group in data["groups"]:
        for rule in group["rules"]:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    for rule in rules():
        await scraped.query(rule["expr"])  # `success`, or the helper fails


async def test_every_rule_reads_only_series_the_service_exports(scraped: Scraped) -> None:
    recorded = recorded_names()
    for rule in rules():
        found = selectors(rule["expr"])
        assert found.metrics, rule
        available: set[str] = set()
        for name, matcher_labels in found.metrics.items():
            if ":" in name:
                assert name in recorded, f"{name} is no recording rule's output"
            series = await scraped.get("series", **{"match[]": name})
            assert series, f"{rule.get('alert') or rule['record']}: no series {name}"
            labels = {label for s in series for label in s}
            missing = matcher_labels - labels
            assert not missing, f"{name} has no label {sorted(missing)}"
            available |= labels
        unknown = found.grouping - available
        assert not unknown, f"{rule.get('alert') or rule['record']}: no label {sorted(unknown)}"


async def test_every_dashboard_query_returns_data(scraped: Scraped) -> None:
    panels = [
        (title, expr)
        for title, expr in gen_dashboard.queries(json.loads(DASHBOARD.read_text()))
        if gen_dashboard.EDGE_METRIC_PREFIX not in expr  # tests/edge checks those
    ]
    assert len(panels) >= 10
    empty = [(title, expr) for title, expr in panels if not await scraped.query(expr)]
    assert not empty, f"dashboard queries without data: {empty}"
