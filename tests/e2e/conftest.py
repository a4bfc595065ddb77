"""Fixtures of the end-to-end tests (a real server, a real channel, real HTTP) that more than
one module uses; the server, its channel and stub are in tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from jackpot_grpc.entrypoints.server import RunningServer
from testkit.gateways import gateway_to


@pytest.fixture
async def rest_url(server: RunningServer) -> AsyncIterator[str]:
    """A real REST gateway in front of `server`: its base URL."""
    metrics_url = f"http://127.0.0.1:{server.health_port}/metrics"
    async with gateway_to(f"127.0.0.1:{server.port}", metrics_url=metrics_url) as url:
        yield url
