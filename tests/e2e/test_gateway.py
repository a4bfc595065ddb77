"""The REST gateway over real HTTP, in front of a real gRPC server on a real PostgreSQL.

The runbook's curl commands (port 3000) are replayed here against a gateway on port 0.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from aiohttp import web
from jackpot.v1 import jackpot_pb2

from jackpot_grpc.entrypoints.server import RunningServer
from jackpot_grpc.gateway.app import RunningGateway, create_gateway_app, start_gateway
from testkit.ledger import table_counts
from testkit.ports import free_port

MAX_BODY = 4096
ADMIN = "test-admin-token"
POOLS = "/api/jackpot/pools"
CONTRIBUTE = "/api/jackpot/contribute"
BATCH = "/api/jackpot/contribute:batch"
WIN = "/api/jackpot/win"
STATISTICS = "/api/jackpot/statistics"
CONFIG = "/api/jackpot/config"


@pytest.fixture
async def metrics_upstream() -> AsyncIterator[str]:
    """Stands in for the server process's health/metrics HTTP: echoes what it was asked."""

    async def metrics(request: web.Request) -> web.Response:
        if "application/json" not in request.headers.get("Accept", ""):
            return web.Response(text="jackpot_requests_total 42\n", content_type="text/plain")
        return web.json_response(
            {
                "total_requests": 42,
                "error_rate": 0.0,
                "response_times": {"avg": 1.5, "p95": 3.0},
                "period": request.query.get("period"),
                # The health port's operator extras, which the public port leaves out.
                "refusals": {"admission": {"in_flight_limit": 3}},
                "history": {"writes": "ok"},
                "history_error": "connection to db.internal:5432 refused",
            }
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    running = await start_gateway(app, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{running.port}/metrics"
    await running.stop()


async def _gateway(target: str, metrics_url: str) -> RunningGateway:
    app = create_gateway_app(
        target, max_body_bytes=MAX_BODY, metrics_url=metrics_url, call_timeout=5.0
    )
    return await start_gateway(app, "127.0.0.1", 0, shutdown_timeout=1.0)


@pytest.fixture
async def base(server: RunningServer, metrics_upstream: str) -> AsyncIterator[str]:
    running = await _gateway(f"127.0.0.1:{server.port}", metrics_upstream)
    yield f"http://127.0.0.1:{running.port}"
    await running.stop()


@pytest.fixture
async def offline(metrics_upstream: str) -> AsyncIterator[str]:
    """A gateway with no gRPC server behind it: a request that reached gRPC would get 503,
    so a 400/404/405/413 here proves the gateway itself answered."""
    running = await _gateway(f"127.0.0.1:{free_port()}", metrics_upstream)
    yield f"http://127.0.0.1:{running.port}"
    await running.stop()


async def _json(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.request(method, url, **kwargs) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json(), response


def _assert_error(body: Any, code: int, *words: str) -> None:
    assert set(body) == {"code", "message", "details"}, body
    assert body["code"] == code, body
    assert isinstance(body["details"], list)
    for word in words:
        assert word in body["message"], body


# A fresh database's ledger row counts (the migration funds the three default pools' seeds).
NOTHING_WRITTEN = {"contributions": 0, "wins": 0, "seed_fundings": 3, "config_audit": 0}


async def _applies_once(
    http: aiohttp.ClientSession, url: str, payload: dict[str, Any], key: str
) -> None:
    """POSTed twice with one Idempotency-Key: written once (the refusal before did not take
    the key), the second answer the same but replayed."""
    headers = {"Idempotency-Key": key}
    status, first, _ = await _json(http, "POST", url, json=payload, headers=headers)
    assert status == 200, first
    _, again, _ = await _json(http, "POST", url, json=payload, headers=headers)
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert {**again, "replayed": False} == first


def _violations(body: Any) -> dict[str, str]:
    return {
        v["field"]: v["description"]
        for d in body["details"]
        if d["@type"] == "type.googleapis.com/google.rpc.BadRequest"
        for v in d["fieldViolations"]
    }


# --- the runbook, verbatim in spirit ---------------------------------------------------------


async def test_runbook_get_pools(http: aiohttp.ClientSession, base: str) -> None:
    status, body, _ = await _json(http, "GET", base + POOLS)
    assert status == 200
    groups = [p["group"] for p in body["pools"]]
    assert groups == ["JACKPOT_GROUP_MINOR", "JACKPOT_GROUP_MAJOR", "JACKPOT_GROUP_MEGA"]
    minor = body["pools"][0]
    assert minor["currentAmount"] == "10000"  # int64 as a JSON string (proto3 mapping)
    assert minor["contributionRate"] == {"value": "0.0050000000"}
    assert minor["totalWins"] == "0" and minor["lastWonByUserId"] == ""  # unset fields emitted


async def test_runbook_contribute(http: aiohttp.ClientSession, base: str) -> None:
    async with http.post(
        base + CONTRIBUTE,
        headers={"Content-Type": "application/json"},
        data='{"gameId": "test", "wagerAmount": 1000}',
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert body["totalContribution"] == "10"
    assert [c["amount"] for c in body["contributions"]] == ["5", "3", "2"]
    assert body["replayed"] is False
    _, pools, _ = await _json(http, "GET", base + POOLS)
    assert [p["currentAmount"] for p in pools["pools"]] == ["10005", "100003", "1000002"]


async def test_contribute_without_content_type_like_curl_d(
    http: aiohttp.ClientSession, base: str
) -> None:
    """`curl -d` without -H sends form encoding; the body is still JSON and is read as such."""
    status, body, _ = await _json(
        http,
        "POST",
        base + CONTRIBUTE,
        data=b'{"game_id": "test", "wager_amount": "2000"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200, body
    assert body["totalContribution"] == "20"


def _assert_conforms(doc: Any, path: str, method: str, status: int, body: bytes) -> None:
    """The response validates against the gateway's own OpenAPI (as schemathesis reads it)."""
    operation = schemathesis.openapi.from_dict(doc)[path][method]
    response = schemathesis.Response(
        status_code=status,
        headers={"content-type": ["application/json"]},
        content=body,
        request=requests.Request(method, "http://gateway" + path).prepare(),
        elapsed=0.0,
        verify=False,
    )
    operation.validate_response(response)


async def test_unset_fields_are_null_until_a_win(http: aiohttp.ClientSession, base: str) -> None:
    """Every declared field is present: unset messages and `optional` scalars as null."""
    _, doc, _ = await _json(http, "GET", base + "/openapi.json")
    async with http.get(base + POOLS) as response:
        assert response.status == 200
        raw = await response.read()
        before = await response.json()
    _assert_conforms(doc, POOLS, "GET", 200, raw)
    declared = {f.json_name for f in jackpot_pb2.Pool.DESCRIPTOR.fields}
    for pool in before["pools"]:
        assert set(pool) == declared, pool
        assert pool["lastWonAt"] is None
    mega = before["pools"][2]
    assert mega["group"] == "JACKPOT_GROUP_MEGA" and mega["maxAmount"] is None
    assert isinstance(mega["updatedAt"], str)  # a set Timestamp stays an RFC 3339 string

    payload = {"group": "JACKPOT_GROUP_MINOR", "gameId": "slots", "userId": str(uuid.uuid4())}
    status, win, _ = await _json(http, "POST", base + WIN, json={**payload, "winAmount": "100"})
    assert status == 200, win
    async with http.get(base + POOLS) as response:
        raw = await response.read()
        after = await response.json()
    _assert_conforms(doc, POOLS, "GET", 200, raw)
    minor = after["pools"][0]
    won_at = datetime.fromisoformat(minor["lastWonAt"].replace("Z", "+00:00"))
    assert minor["lastWonAt"].endswith("Z") and won_at.tzinfo is not None
    assert minor["lastWonAt"] == win["pool"]["lastWonAt"]
    assert [p["lastWonAt"] for p in after["pools"][1:]] == [None, None]
    assert after["pools"][2]["maxAmount"] is None


async def test_oneof_emits_only_the_set_member(http: aiohttp.ClientSession, base: str) -> None:
    payload = {"contributions": [{"gameId": "a", "wagerAmount": 1000}, {"gameId": ""}]}
    _, body, _ = await _json(http, "POST", base + BATCH, json=payload)
    ok, rejected = body["results"]
    assert set(ok) == {"result"} and set(rejected) == {"error"}
    assert isinstance(ok["result"]["createdAt"], str)


# --- every path and method ---------------------------------------------------------------------


async def test_idempotency_key_header_replays(http: aiohttp.ClientSession, base: str) -> None:
    key = f"idem-{uuid.uuid4()}"
    payload = {"gameId": "slots", "wagerAmount": 1000}
    headers = {"Idempotency-Key": key}
    _, first, _ = await _json(http, "POST", base + CONTRIBUTE, json=payload, headers=headers)
    _, second, _ = await _json(http, "POST", base + CONTRIBUTE, json=payload, headers=headers)
    assert first["replayed"] is False and second["replayed"] is True
    assert first["contributionId"] == second["contributionId"] != "0"
    _, stats, _ = await _json(http, "GET", base + STATISTICS)
    assert stats["totalContributionCount"] == "1"


async def test_body_and_header_keys_that_disagree_are_400(
    http: aiohttp.ClientSession, offline: str
) -> None:
    """Neither silently wins: the caller sent two keys and is told so."""
    payload = {"gameId": "slots", "wagerAmount": 1000, "idempotencyKey": "from-body"}
    status, body, _ = await _json(
        http, "POST", offline + CONTRIBUTE, json=payload, headers={"Idempotency-Key": "other"}
    )
    assert status == 400
    assert "Idempotency-Key" in _violations(body)


async def test_contribute_batch(http: aiohttp.ClientSession, base: str) -> None:
    payload = {
        "contributions": [
            {"gameId": "a", "wagerAmount": 1000},
            {"gameId": "", "wagerAmount": 1000},
            {"gameId": "b", "wagerAmount": "2000"},
        ]
    }
    status, body, _ = await _json(http, "POST", base + BATCH, json=payload)
    assert status == 200
    assert (body["appliedCount"], body["rejectedCount"]) == (2, 1)
    assert body["results"][0]["result"]["totalContribution"] == "10"
    assert body["results"][1]["error"]["field"] == "game_id"
    assert body["results"][2]["result"]["totalContribution"] == "20"


async def test_win_valid_uuid(http: aiohttp.ClientSession, base: str) -> None:
    user = str(uuid.uuid4())
    payload = {
        "group": "JACKPOT_GROUP_MINOR",
        "gameId": "slots",
        "userId": user,
        "winAmount": "2500",
    }
    status, body, _ = await _json(http, "POST", base + WIN, json=payload)
    assert status == 200, body
    assert body["actualWinAmount"] == "2500"
    assert body["remainingAmount"] == "10000"  # fell below the seed: topped back up
    assert body["seedTopUp"] == "2500"
    assert body["pool"]["lastWonByUserId"] == user
    assert body["pool"]["lastWonAmount"] == "2500"
    assert "actual_win_amount" not in body


async def test_win_larger_than_pool_is_failed_precondition(
    http: aiohttp.ClientSession, base: str, database_url: str
) -> None:
    payload = {
        "group": "JACKPOT_GROUP_MINOR",
        "gameId": "slots",
        "userId": str(uuid.uuid4()),
        "winAmount": 10_000_000,
    }
    key = f"rest-win-{uuid.uuid4()}"
    status, body, _ = await _json(
        http, "POST", base + WIN, json=payload, headers={"Idempotency-Key": key}
    )
    assert status == 400
    _assert_error(body, 9)  # FAILED_PRECONDITION
    _, pools, _ = await _json(http, "GET", base + POOLS)
    assert pools["pools"][0]["currentAmount"] == "10000"  # nothing changed
    assert table_counts(database_url) == NOTHING_WRITTEN
    await _applies_once(http, base + WIN, {**payload, "winAmount": 5}, key)
    assert table_counts(database_url)["wins"] == 1


async def test_win_bad_user_id_has_field_violation(http: aiohttp.ClientSession, base: str) -> None:
    payload = {"group": 1, "gameId": "slots", "userId": "not-a-uuid"}
    status, body, _ = await _json(http, "POST", base + WIN, json=payload)
    assert status == 400
    _assert_error(body, 3)
    assert "user_id" in _violations(body)


async def test_statistics_and_get_config(http: aiohttp.ClientSession, base: str) -> None:
    await _json(http, "POST", base + CONTRIBUTE, json={"gameId": "g", "wagerAmount": 1000})
    status, stats, _ = await _json(http, "GET", base + STATISTICS)
    assert status == 200
    assert stats["totalContributionCount"] == "1" and stats["totalContributed"] == "10"
    assert stats["totalWagered"] == "1000"
    status, config, _ = await _json(http, "GET", base + CONFIG)
    assert status == 200
    assert [c["seedAmount"] for c in config["pools"]] == ["10000", "100000", "1000000"]
    assert config["pools"][2]["maxAmount"] is None  # unset optional: no cap on mega


@pytest.mark.parametrize(
    ("authorization", "status", "code"),
    [
        # 401 and 403 need a server with clients: tests/e2e/test_identity_rest.py.
        (f"Bearer {ADMIN}", 200, None),
    ],
)
async def test_update_config_needs_bearer_token(
    http: aiohttp.ClientSession, base: str, authorization: str | None, status: int, code: int | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    payload = {
        "group": "JACKPOT_GROUP_MAJOR",
        "seedAmount": "150000",
        "contributionRate": {"value": "0.004"},
        "actor": "ops",
        "reason": "test",
    }
    got, body, _ = await _json(http, "PUT", base + CONFIG, json=payload, headers=headers)
    assert got == status, body
    if code is not None:
        _assert_error(body, code)
        return
    assert body["config"]["seedAmount"] == "150000"
    assert body["config"]["contributionRate"]["value"].startswith("0.004")
    assert int(body["auditId"]) > 0
    _, config, _ = await _json(http, "GET", base + CONFIG)
    assert config["pools"][1]["seedAmount"] == "150000"


async def test_update_config_version_conflict_is_409(
    http: aiohttp.ClientSession, base: str, database_url: str
) -> None:
    payload = {"group": "JACKPOT_GROUP_MINOR", "seedAmount": "20000", "expectedVersion": "999"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    status, body, _ = await _json(http, "PUT", base + CONFIG, json=payload, headers=admin)
    assert status == 409
    _assert_error(body, 10)  # ABORTED
    assert table_counts(database_url) == NOTHING_WRITTEN
    # Retried at the version the pool is at, it applies once; the same retry again is 409.
    retry = {**payload, "expectedVersion": "1"}
    status, body, _ = await _json(http, "PUT", base + CONFIG, json=retry, headers=admin)
    assert status == 200, body
    status, _, _ = await _json(http, "PUT", base + CONFIG, json=retry, headers=admin)
    assert status == 409
    assert table_counts(database_url) == {**NOTHING_WRITTEN, "config_audit": 1}


# --- errors: every one JSON, never a 500 for bad input ---------------------------------------


async def test_malformed_json_is_400(http: aiohttp.ClientSession, offline: str) -> None:
    status, body, _ = await _json(http, "POST", offline + CONTRIBUTE, data=b'{"gameId": "t",')
    assert status == 400
    _assert_error(body, 3, "invalid JSON")


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"text"', b"42", b"null"])
async def test_non_object_body_is_400(
    http: aiohttp.ClientSession, offline: str, payload: bytes
) -> None:
    status, body, _ = await _json(http, "POST", offline + CONTRIBUTE, data=payload)
    assert status == 400
    _assert_error(body, 3, "object")


async def test_wrong_type_is_400_naming_the_field(
    http: aiohttp.ClientSession, offline: str
) -> None:
    status, body, _ = await _json(
        http, "POST", offline + CONTRIBUTE, json={"gameId": "test", "wagerAmount": "ten"}
    )
    assert status == 400
    _assert_error(body, 3, "wagerAmount")
    assert "wagerAmount" in _violations(body)


async def test_boolean_for_enum_is_400(http: aiohttp.ClientSession, offline: str) -> None:
    """json_format would read `true` as 1 (MINOR); paying a pool nobody named is refused."""
    payload = {"group": True, "gameId": "g", "userId": str(uuid.uuid4())}
    status, body, _ = await _json(http, "POST", offline + WIN, json=payload)
    assert status == 400
    assert "group" in _violations(body)


async def test_nested_wrong_type_names_the_path(http: aiohttp.ClientSession, offline: str) -> None:
    payload = {"contributions": [{"gameId": "a", "wagerAmount": 1.5}]}
    status, body, _ = await _json(http, "POST", offline + BATCH, json=payload)
    assert status == 400
    assert "contributions[0].wagerAmount" in _violations(body)


async def test_domain_validation_is_400_with_details(
    http: aiohttp.ClientSession, base: str, database_url: str
) -> None:
    key = f"rest-bad-{uuid.uuid4()}"
    status, body, _ = await _json(
        http,
        "POST",
        base + CONTRIBUTE,
        json={"gameId": "  ", "wagerAmount": 0},
        headers={"Idempotency-Key": key},
    )
    assert status == 400
    _assert_error(body, 3)
    assert set(_violations(body)) == {"game_id", "wager_amount"}
    assert table_counts(database_url) == NOTHING_WRITTEN
    await _applies_once(http, base + CONTRIBUTE, {"gameId": "slots", "wagerAmount": 1000}, key)
    assert table_counts(database_url) == {**NOTHING_WRITTEN, "contributions": 1}


async def test_unknown_fields_are_400_by_name(http: aiohttp.ClientSession, offline: str) -> None:
    payload = {"gameId": "test", "wagerAmount": 1000, "currency": "EUR"}
    status, body, _ = await _json(http, "POST", offline + CONTRIBUTE, json=payload)
    assert status == 400
    assert _violations(body) == {"currency": "unknown field"}


async def test_unknown_path_is_404(http: aiohttp.ClientSession, offline: str) -> None:
    status, body, _ = await _json(http, "GET", offline + "/api/jackpot/nope")
    assert status == 404
    _assert_error(body, 5, "/api/jackpot/nope")


async def test_wrong_method_is_405_with_allow(http: aiohttp.ClientSession, offline: str) -> None:
    status, body, response = await _json(http, "DELETE", offline + CONFIG)
    assert status == 405
    _assert_error(body, 12, "DELETE")
    assert set(response.headers["Allow"].split(",")) == {"GET", "PUT"}
    status, body, response = await _json(http, "GET", offline + CONTRIBUTE)
    assert status == 405 and response.headers["Allow"] == "POST"


async def test_oversized_body_is_413(http: aiohttp.ClientSession, offline: str) -> None:
    padding = "x" * (MAX_BODY + 1)
    status, body, _ = await _json(
        http, "POST", offline + CONTRIBUTE, data=f'{{"gameId": "{padding}"}}'.encode()
    )
    assert status == 413
    _assert_error(body, 8, str(MAX_BODY))


async def test_oversized_chunked_body_is_413(http: aiohttp.ClientSession, offline: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 1024  # no Content-Length: only the read limit can catch it

    status, body, _ = await _json(http, "POST", offline + CONTRIBUTE, data=chunks())
    assert status == 413
    _assert_error(body, 8)


async def test_grpc_service_down_is_503(http: aiohttp.ClientSession, offline: str) -> None:
    status, body, _ = await _json(http, "GET", offline + POOLS)
    assert status == 503
    _assert_error(body, 14)  # UNAVAILABLE
    status, body, _ = await _json(
        http, "POST", offline + CONTRIBUTE, json={"gameId": "t", "wagerAmount": 1}
    )
    assert status == 503
    _assert_error(body, 14)


# --- metrics and OpenAPI -----------------------------------------------------------------------


async def test_metrics_proxied_with_the_period_as_public_json(
    http: aiohttp.ClientSession, offline: str
) -> None:
    status, body, _ = await _json(http, "GET", offline + "/metrics")
    assert status == 200
    assert body["total_requests"] == 42 and body["period"] is None
    _, body, _ = await _json(http, "GET", offline + "/metrics?period=30d")
    assert body["period"] == "30d"
    assert body["response_times"] == {"avg": 1.5, "p95": 3.0}
    # JSON whatever is asked for, without the operator extras or the database's address.
    status, body, _ = await _json(
        http, "GET", offline + "/metrics", headers={"Accept": "text/plain"}
    )
    assert status == 200
    assert set(body) == {
        "total_requests",
        "error_rate",
        "response_times",
        "period",
        "history_error",
    }
    assert "db.internal" not in body["history_error"]


async def test_runbook_metrics_from_the_real_server(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    """`curl -s http://localhost:3000/metrics | jq '.total_requests'` against the real thing."""
    running = await _gateway(
        f"127.0.0.1:{server.port}", f"http://127.0.0.1:{server.health_port}/metrics"
    )
    try:
        base = f"http://127.0.0.1:{running.port}"
        await _json(http, "POST", base + CONTRIBUTE, json={"gameId": "test", "wagerAmount": 1000})
        status, body, _ = await _json(http, "GET", base + "/metrics")
        assert status == 200
        assert body["total_requests"] >= 1
        assert {"avg", "p95"} <= set(body["response_times"])
        status, body, _ = await _json(http, "GET", base + "/metrics?period=30d")
        assert status == 200 and "total_requests" in body
    finally:
        await running.stop()


async def test_metrics_upstream_down_is_503(http: aiohttp.ClientSession) -> None:
    running = await _gateway(f"127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}/metrics")
    try:
        status, body, _ = await _json(http, "GET", f"http://127.0.0.1:{running.port}/metrics")
        assert status == 503
        _assert_error(body, 14, "metrics")
        assert "127.0.0.1" not in body["message"]  # the health port's address: logged only
    finally:
        await running.stop()


async def test_openapi_lists_every_route(http: aiohttp.ClientSession, offline: str) -> None:
    status, doc, _ = await _json(http, "GET", offline + "/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.0")
    methods = {(path, m) for path, item in doc["paths"].items() for m in item}
    assert methods == {
        (POOLS, "get"),
        (CONTRIBUTE, "post"),
        (BATCH, "post"),
        (WIN, "post"),
        (STATISTICS, "get"),
        (CONFIG, "get"),
        (CONFIG, "put"),
        (POOLS + ":watch", "get"),
        ("/api/jackpot/ledger/{leaf_index}/proof", "get"),
        ("/api/jackpot/wins", "get"),
        (POOLS + "/{group}:suspend", "post"),
        (POOLS + "/{group}:resume", "post"),
    }
    watch = doc["paths"][POOLS + ":watch"]["get"]["responses"]["200"]["content"]
    assert set(watch) == {"application/x-ndjson", "text/event-stream"}
    schemas = doc["components"]["schemas"]
    request = schemas["jackpot.v1.ContributeRequest"]["properties"]
    assert request["wagerAmount"] == {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
    assert request["gameId"] == {"type": "string"}
    pool = schemas["jackpot.v1.Pool"]["properties"]
    # Unset, these are emitted as null: OpenAPI 3.0 `nullable` (a $ref is wrapped in allOf).
    assert pool["lastWonAt"] == {"type": "string", "format": "date-time", "nullable": True}
    assert pool["maxAmount"] == {
        **request["wagerAmount"],
        "nullable": True,
        "description": "Unset: the pool has no cap.",  # the proto comment
    }
    assert pool["contributionRate"] == {
        "allOf": [{"$ref": "#/components/schemas/google.type.Decimal"}],
        "nullable": True,
    }
    assert pool["currentAmount"] == request["wagerAmount"]  # no presence: never null
    results = schemas["jackpot.v1.ContributeBatchItemResult"]["properties"]
    assert "nullable" not in results["error"]  # a oneof member: set or absent, never null
    assert schemas["google.type.Decimal"]["properties"]["value"] == {"type": "string"}
    assert "JACKPOT_GROUP_MEGA" in schemas["jackpot.v1.JackpotGroup"]["enum"]
