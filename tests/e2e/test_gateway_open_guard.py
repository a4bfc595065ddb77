"""A gateway listening beyond loopback never fronts a server that answers without
credentials, whatever the gateway's own settings: it asks the server at start and after
each reconnect. Real `jackpot gateway` processes, real servers (open and closed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import start_server
from jackpot_grpc.gateway.app import create_gateway_app, start_gateway
from jackpot_grpc.gateway.open_guard import OpenServerError
from testkit.identity import secured
from testkit.ports import free_port
from testkit.processes import ServiceProcess, clean_env

POOLS = "/api/jackpot/pools"
LISTENING = re.compile(r"REST gateway listening on 0\.0\.0\.0:(\d+)")


def gateway_process(target: str, log_dir: Path, **env: str) -> ServiceProcess:
    """`jackpot gateway` on 0.0.0.0, port 0, with a clients file of its own (as the
    systemd unit has) that says nothing about the server's."""
    return ServiceProcess(
        ["gateway"],
        {
            **clean_env(),
            "JACKPOT_GRPC_TARGET": target,
            "REST_HOST": "0.0.0.0",
            "REST_PORT": "0",
            "JACKPOT_CLIENTS_FILE": str(log_dir / "gateway-clients.json"),
            "JACKPOT_METRICS_URL": "http://127.0.0.1:9/metrics",
            "JACKPOT_LOG_DIR": str(log_dir),
            "OTEL_SDK_DISABLED": "true",
            **env,
        },
        log_dir,
    )


def listening_port(gateway: ServiceProcess, timeout: float = 20.0) -> int:
    found: list[int] = []

    def listening() -> bool:
        match = LISTENING.search(gateway.output())
        if match:
            found.append(int(match[1]))
        return bool(found)

    gateway.wait_until(listening, timeout, "listening")
    return found[0]


def get_status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


async def test_a_wide_gateway_refuses_to_front_an_open_server(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    running = await start_server(settings, database_url, port=0)  # open, on loopback
    target = f"127.0.0.1:{running.port}"
    try:
        refused = gateway_process(target, tmp_path / "refused")
        refused.launch()
        try:
            code = await asyncio.to_thread(refused.wait, 30)  # the server runs on this loop
        finally:
            refused.stop()
        assert code != 0, refused.log()
        assert "answers calls without credentials" in refused.output()
        assert "JACKPOT_ALLOW_OPEN=1" in refused.output()
        assert not LISTENING.search(refused.output())

        allowed = gateway_process(target, tmp_path / "allowed", JACKPOT_ALLOW_OPEN="1")
        allowed.launch()
        try:
            port = await asyncio.to_thread(listening_port, allowed)
            assert await asyncio.to_thread(get_status, f"http://127.0.0.1:{port}{POOLS}") == 200
        finally:
            allowed.stop()
    finally:
        await running.stop(grace=1.0)


async def test_a_wide_gateway_fronts_a_closed_server(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    closed, tokens = secured(settings, tmp_path)
    running = await start_server(closed, database_url, port=0)
    try:
        gateway = gateway_process(
            f"127.0.0.1:{running.port}",
            tmp_path / "closed",
            JACKPOT_GATEWAY_TOKEN=tokens["gateway"],
        )
        gateway.launch()
        try:
            port = await asyncio.to_thread(listening_port, gateway)
            base = f"http://127.0.0.1:{port}"
            assert await asyncio.to_thread(get_status, base + POOLS, tokens["reader"]) == 200
            assert await asyncio.to_thread(get_status, base + POOLS) == 401
        finally:
            gateway.stop()
        # The check went with the gateway's own token: refused as forbidden, which does not
        # count against the gateway's address; the one uncredentialed call above did.
        failures = running.metrics.registry.get_sample_value
        assert failures("jackpot_auth_failures_total", {"reason": "forbidden"}) == 1
        assert failures("jackpot_auth_failures_total", {"reason": "missing_credentials"}) == 1
    finally:
        await running.stop(grace=1.0)


async def test_a_server_that_comes_back_open_is_not_fronted(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    """After a reconnect the gateway asks again: a server restarted without clients on the
    same port gets no call through (503), and the start-up check refuses at once."""
    closed, tokens = secured(settings, tmp_path)
    running = await start_server(closed, database_url, port=0)
    port = running.port
    app = create_gateway_app(
        f"127.0.0.1:{port}",
        max_body_bytes=1 << 16,
        metrics_url="http://127.0.0.1:9/metrics",
        call_timeout=5.0,
        open_server_probe_wait=5.0,
    )
    gateway = await start_gateway(app, "127.0.0.1", 0, shutdown_timeout=1.0)
    url = f"http://127.0.0.1:{gateway.port}{POOLS}"
    reader = {"Authorization": f"Bearer {tokens['reader']}"}
    reopened = None
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers=reader) as response:
                assert response.status == 200
            await running.stop(grace=0.5)
            reopened = await start_server(
                dataclasses.replace(
                    settings, grpc=dataclasses.replace(settings.grpc, reuse_port=False)
                ),
                database_url,
                port=port,
            )
            deadline = time.monotonic() + 30
            statuses: list[int] = []
            while time.monotonic() < deadline:
                async with http.get(url) as response:  # no credentials at all
                    statuses.append(response.status)
                    body = await response.json()
                if response.status == 503 and "without credentials" in body["message"]:
                    break
            assert statuses[-1] == 503, statuses
            assert 200 not in statuses  # nothing got through to the open server
        with pytest.raises(OpenServerError, match="JACKPOT_ALLOW_OPEN=1"):
            await start_gateway(
                create_gateway_app(
                    f"127.0.0.1:{port}",
                    max_body_bytes=1 << 16,
                    metrics_url="http://127.0.0.1:9/metrics",
                    open_server_probe_wait=5.0,
                ),
                "127.0.0.1",
                0,
            )
    finally:
        await gateway.stop()
        if reopened is not None:
            await reopened.stop(grace=0.5)


async def test_a_gateway_started_before_its_server_forwards_once_the_server_refuses(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    """No server yet: the gateway starts, but forwards nothing (503) until the server has
    shown that it requires credentials."""
    port = free_port()
    app = create_gateway_app(
        f"127.0.0.1:{port}",
        max_body_bytes=1 << 16,
        metrics_url="http://127.0.0.1:9/metrics",
        call_timeout=5.0,
        open_server_probe_wait=0.5,
    )
    gateway = await start_gateway(app, "127.0.0.1", 0, shutdown_timeout=1.0)
    url = f"http://127.0.0.1:{gateway.port}{POOLS}"
    running = None
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as response:
                assert response.status == 503
                assert "not yet shown" in (await response.json())["message"]
            closed, tokens = secured(settings, tmp_path)
            running = await start_server(closed, database_url, port=port)
            reader = {"Authorization": f"Bearer {tokens['reader']}"}
            deadline = time.monotonic() + 30
            status = 0
            while status != 200 and time.monotonic() < deadline:
                async with http.get(url, headers=reader) as response:
                    status = response.status
            assert status == 200
    finally:
        await gateway.stop()
        if running is not None:
            await running.stop(grace=0.5)
