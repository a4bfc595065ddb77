"""Who may call what through the REST gateway, over real HTTP to a real closed server.

No or unknown credentials: 401 with `WWW-Authenticate: Bearer`; a client without the
role: 403; the right role: 200. A refused call writes nothing. The OpenAPI document says
which role each route needs, and /metrics on the public port answers JSON without a token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from jackpot_grpc.gateway.app import create_gateway_app, start_gateway
from testkit.identity import secured
from testkit.ledger import table_counts
from testkit.random_refs import random_key, random_user

CALLERS = ("none", "unknown", "game", "reader", "admin")
READ = {"none": 401, "unknown": 401, "game": 200, "reader": 200, "admin": 200}
GAME = {**READ, "reader": 403, "admin": 403}
ADMIN = {**READ, "game": 403, "reader": 403}


def routes() -> dict[str, tuple[str, str, Any, dict[str, int]]]:
    return {
        "Contribute": (
            "POST",
            "/api/jackpot/contribute",
            {"gameId": "web", "wagerAmount": "1000", "idempotencyKey": random_key()},
            GAME,
        ),
        "ContributeBatch": (
            "POST",
            "/api/jackpot/contribute:batch",
            {"contributions": [{"gameId": "web", "wagerAmount": "500"}]},
            GAME,
        ),
        "Win": (
            "POST",
            "/api/jackpot/win",
            {
                "group": "JACKPOT_GROUP_MAJOR",
                "gameId": "web",
                "userId": random_user(),
                "winAmount": "1",
            },
            GAME,
        ),
        "GetPools": ("GET", "/api/jackpot/pools", None, READ),
        "GetStatistics": ("GET", "/api/jackpot/statistics", None, READ),
        "GetConfig": ("GET", "/api/jackpot/config", None, READ),
        "UpdateConfig": (
            "PUT",
            "/api/jackpot/config",
            {"group": "JACKPOT_GROUP_MINOR", "seedAmount": "11000", "actor": "web"},
            ADMIN,
        ),
    }


@pytest.fixture
async def closed(
    settings: Settings, database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A gateway in front of a server with clients: (its base URL, tokens by role)."""
    closed_settings, tokens = secured(settings, tmp_path, failure_limit=1000)
    running: RunningServer = await start_server(closed_settings, database_url, port=0)
    app = create_gateway_app(
        f"127.0.0.1:{running.port}",
        max_body_bytes=closed_settings.gateway.max_body_bytes,
        metrics_url=f"http://127.0.0.1:{running.health_port}/metrics",
        call_timeout=5.0,
    )
    gateway = await start_gateway(app, "127.0.0.1", 0, shutdown_timeout=1.0)
    yield f"http://127.0.0.1:{gateway.port}", tokens
    await gateway.stop()
    await running.stop(grace=1.0)


def headers(caller: str, tokens: dict[str, str]) -> dict[str, str]:
    if caller == "none":
        return {}
    return {"Authorization": f"Bearer {tokens.get(caller, 'jpk_nobody-has-this')}"}


@pytest.mark.parametrize("method", list(routes()))
async def test_each_route_answers_each_role_and_refusals_write_nothing(
    method: str, closed: tuple[str, dict[str, str]], database_url: str
) -> None:
    base, tokens = closed
    async with aiohttp.ClientSession() as http:
        for caller in CALLERS:
            verb, path, body, expected = routes()[method]
            before = table_counts(database_url)
            async with http.request(
                verb, base + path, json=body, headers=headers(caller, tokens)
            ) as response:
                payload = await response.json()
                assert response.status == expected[caller], (method, caller, payload)
                if expected[caller] == 401:
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
                    assert payload["code"] == 16  # UNAUTHENTICATED
                if expected[caller] == 403:
                    assert payload["code"] == 7  # PERMISSION_DENIED
                    assert "WWW-Authenticate" not in response.headers
            if expected[caller] != 200:
                assert table_counts(database_url) == before, (method, caller)


async def test_openapi_declares_the_bearer_scheme_and_each_routes_roles(
    closed: tuple[str, dict[str, str]],
) -> None:
    base, _ = closed
    async with aiohttp.ClientSession() as http, http.get(base + "/openapi.json") as response:
        document = await response.json()
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    win = document["paths"]["/api/jackpot/win"]["post"]
    assert win["security"] == [{"bearerAuth": []}]
    assert win["x-required-roles"] == ["game"]
    assert set(win["responses"]) >= {"200", "401", "403"}
    update = document["paths"]["/api/jackpot/config"]["put"]
    assert update["x-required-roles"] == ["admin"]
    pools = document["paths"]["/api/jackpot/pools"]["get"]
    assert pools["x-required-roles"] == ["game", "reader", "admin"]


async def test_public_metrics_need_no_token_and_answer_json_only(
    closed: tuple[str, dict[str, str]],
) -> None:
    """The runbook's `curl http://localhost:3000/metrics?period=30d` works without a token;
    what it may read and how often is tests/e2e/test_gateway_metrics.py's."""
    base, _ = closed
    async with aiohttp.ClientSession() as http:
        async with http.get(
            base + "/metrics", params={"period": "30d"}, headers={"Accept": "text/plain"}
        ) as response:
            assert (response.status, response.content_type) == (200, "application/json")
            summary = await response.json()
        assert summary["period"] == "30d" and "total_requests" in summary
        assert "refusals" not in summary and "history" not in summary
