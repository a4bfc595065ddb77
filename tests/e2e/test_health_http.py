"""Health and metrics HTTP against a real server on real PostgreSQL, read as the runbook does."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import grpc
import psycopg
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from testkit.outage import database_outage

Stub = jackpot_pb2_grpc.JackpotServiceStub


def url(running: RunningServer, path: str) -> str:
    return f"http://127.0.0.1:{running.health_port}{path}"


async def get_json(
    http: aiohttp.ClientSession, running: RunningServer, path: str
) -> tuple[int, Any]:
    async with http.get(url(running, path)) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def get_text(
    http: aiohttp.ClientSession, running: RunningServer, path: str, accept: str = "*/*"
) -> tuple[int, str, str]:
    async with http.get(url(running, path), headers={"Accept": accept}) as response:
        return response.status, response.headers["Content-Type"], await response.text()


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not true within {within} s"
        await asyncio.sleep(0.1)


async def status_of(http: aiohttp.ClientSession, running: RunningServer, path: str) -> int:
    return (await get_json(http, running, path))[0]


async def test_metrics_count_exactly_the_calls_made(
    server: RunningServer, stub: Stub, http: aiohttp.ClientSession
) -> None:
    for wager in (1000, 2500, 40):
        await stub.Contribute(pb.ContributeRequest(game_id="slots", wager_amount=wager))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Contribute(pb.ContributeRequest(game_id="slots", wager_amount=0))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await stub.GetPools(pb.GetPoolsRequest())
    await stub.GetPools(pb.GetPoolsRequest())

    status, metrics = await get_json(http, server, "/metrics")
    assert status == 200
    assert metrics["period"] == "since_start"
    assert metrics["total_requests"] == 6
    # A refused request is the caller's mistake: a client error, not an error of ours.
    assert (metrics["error_count"], metrics["client_error_count"]) == (0, 1)
    assert metrics["error_rate"] == 0.0
    assert metrics["client_error_rate"] == pytest.approx(1 / 6)
    times = metrics["response_times"]
    assert 0 < times["min"] <= times["p50"] <= times["p95"] <= times["p99"] <= times["max"]
    assert times["min"] <= times["avg"] <= times["max"]
    assert metrics["throughput"]["per_second"] > 0
    contribute = metrics["methods"]["Contribute"]
    assert (contribute["total_requests"], contribute["client_error_count"]) == (4, 1)
    assert contribute["status_codes"] == {"OK": 3, "INVALID_ARGUMENT": 1}
    assert metrics["methods"]["GetPools"]["total_requests"] == 2
    assert set(metrics["methods"]) == {"Contribute", "GetPools"}  # health checks not counted

    status, recent = await get_json(http, server, "/metrics?period=5m")
    assert (status, recent["period"], recent["total_requests"]) == (200, "5m", 6)
    assert 0 < recent["window_seconds"] <= 300

    status, refusal = await get_json(http, server, "/metrics?period=7d")
    assert status == 400
    assert refusal["parameter"] == "period"
    assert refusal["allowed"] == ["5m", "1h", "24h", "30d"]


async def test_prometheus_text_carries_the_counts_and_the_gauges(
    server: RunningServer, stub: Stub, http: aiohttp.ClientSession
) -> None:
    for _ in range(3):
        await stub.Contribute(pb.ContributeRequest(game_id="slots", wager_amount=1000))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Contribute(pb.ContributeRequest(game_id="", wager_amount=1000))
    pools = await stub.GetPools(pb.GetPoolsRequest())

    status, content_type, text = await get_text(http, server, "/metrics/prometheus")
    assert status == 200 and content_type.startswith("text/plain")
    contribute = (
        'grpc_method="Contribute",grpc_service="jackpot.v1.JackpotService",grpc_type="unary"'
    )
    get_pools = 'grpc_method="GetPools",grpc_service="jackpot.v1.JackpotService",grpc_type="unary"'
    assert f'grpc_server_handled_total{{grpc_code="OK",{contribute}}} 3.0' in text
    assert f'grpc_server_handled_total{{grpc_code="INVALID_ARGUMENT",{contribute}}} 1.0' in text
    assert f'grpc_server_handled_total{{grpc_code="OK",{get_pools}}} 1.0' in text
    assert f"grpc_server_started_total{{{contribute}}} 4.0" in text
    assert f"grpc_server_handling_seconds_count{{{contribute}}} 4.0" in text
    assert "jackpot_database_up 1.0" in text
    assert "jackpot_db_pool_max_size 8.0" in text
    minor = next(p for p in pools.pools if p.group == pb.JACKPOT_GROUP_MINOR)
    amount = float(minor.current_amount)
    assert f'jackpot_pool_current_amount_minor_units{{group="minor"}} {amount}' in text

    # /metrics gives the same text to a scraper that asks for text/plain.
    status, content_type, scraped = await get_text(http, server, "/metrics", accept="text/plain")
    assert status == 200 and content_type.startswith("text/plain")
    assert f'grpc_server_handled_total{{grpc_code="OK",{contribute}}} 3.0' in scraped
    status, content_type, _ = await get_text(
        http, server, "/metrics", accept="application/json, text/plain"
    )
    assert content_type.startswith("application/json")


async def test_health_and_database_report_a_healthy_service(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    status, health = await get_json(http, server, "/health")
    assert status == 200
    assert health["status"] == "healthy"
    assert health["checks"]["database"]["status"] == "up"
    assert health["uptime_seconds"] >= 0 and health["version"]

    status, database = await get_json(http, server, "/health/database")
    assert status == 200
    assert database["status"] == "healthy" and database["latency_ms"] > 0
    pool = database["pool"]
    assert (pool["min_size"], pool["max_size"]) == (1, 8)
    assert pool["pool_size"] >= 1 and 0 <= pool["pool_available"] <= pool["pool_size"]
    assert isinstance(pool["requests_waiting"], int) and pool["requests_waiting"] >= 0
    assert 0 <= pool["utilization_percent"] <= 100
    # The health probe (its own connection) and the audit (the on-demand pool) never
    # borrow from the calls' pool: no call was made, so nothing has asked it for one.
    assert pool["counters"].get("requests_num", 0) == 0, pool["counters"]


async def test_jackpot_health_shows_pools_and_balanced_books(
    server: RunningServer, stub: Stub, http: aiohttp.ClientSession
) -> None:
    await stub.Contribute(pb.ContributeRequest(game_id="slots", wager_amount=100_000))
    await stub.Win(
        pb.WinRequest(
            group=pb.JACKPOT_GROUP_MINOR, game_id="slots", user_id=str(uuid.uuid4()), win_amount=5
        )
    )
    pools = await stub.GetPools(pb.GetPoolsRequest())
    # The books shown are the background audit's, which starts with the server: wait for
    # its first result rather than race it.
    await eventually(lambda: _ledger_checked(http, server), within=5)

    status, jackpot = await get_json(http, server, "/health/jackpot")
    assert status == 200
    assert jackpot["status"] == "healthy" and jackpot["pools_readable"]
    amounts = {p["group"]: (p["current_amount"], p["version"]) for p in jackpot["pools"]}
    assert amounts == {
        name: (p.current_amount, p.version)
        for name, p in zip(("minor", "major", "mega"), pools.pools, strict=True)
    }
    minor = jackpot["pools"][0]
    assert minor["last_won_at"] is not None and jackpot["last_activity"] >= minor["last_won_at"]
    ledger = jackpot["ledger"]
    assert ledger["balanced"] is True and ledger["discrepancies"] == []
    assert [p["discrepancy"] for p in ledger["pools"]] == [0, 0, 0]


async def test_jackpot_health_reports_the_background_audit_and_audits_on_request(
    server: RunningServer, http: aiohttp.ClientSession, database_url: str
) -> None:
    # The server audits once at start; a probe reads that result and does not scan again.
    await eventually(lambda: _ledger_checked(http, server), within=5)
    status, first = await get_json(http, server, "/health/jackpot")
    assert status == 200 and first["ledger"]["balanced"] is True
    assert first["ledger"]["age_seconds"] >= 0 and first["ledger"]["problems"] == []
    assert first["ledger"]["contribution_totals"]["balanced"] is True
    assert first["ledger"]["rows_from"] is None  # a process's first audit proves every row

    with psycopg.connect(database_url, autocommit=True) as conn:  # money from nowhere
        conn.execute("UPDATE jackpots SET current_amount = current_amount + 9 WHERE lock_order = 0")
    status, cached = await get_json(http, server, "/health/jackpot")
    assert (status, cached["ledger"]["checked_at"]) == (200, first["ledger"]["checked_at"])

    status, audited = await get_json(http, server, "/health/jackpot?audit=now")
    assert (status, audited["status"]) == (503, "unhealthy")
    off, chain = audited["ledger"]["problems"]
    assert off == "minor off by 9" and "its chain of ledger rows ends at" in chain
    assert [d["group"] for d in audited["ledger"]["discrepancies"]] == ["minor"]
    # The imbalance is now the latest result: every probe reports it until books balance.
    assert await status_of(http, server, "/health/jackpot") == 503
    # /health carries the verdict too: books that do not balance are not healthy.
    status, health = await get_json(http, server, "/health")
    assert (status, health["status"]) == (503, "unhealthy")
    assert health["checks"]["ledger"]["balanced"] is False
    assert health["checks"]["ledger"]["problems"] == audited["ledger"]["problems"]

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE jackpots SET current_amount = current_amount - 9 WHERE lock_order = 0")
    assert await status_of(http, server, "/health/jackpot?audit=now") == 200
    assert await status_of(http, server, "/health") == 200


async def _ledger_checked(http: aiohttp.ClientSession, running: RunningServer) -> bool:
    return bool((await get_json(http, running, "/health/jackpot"))[1]["ledger"]["checked"])


async def test_a_lost_database_turns_health_503_and_back(
    server: RunningServer,
    stub: Stub,
    http: aiohttp.ClientSession,
    admin_url: str,
    database_url: str,
) -> None:
    await stub.GetPools(pb.GetPoolsRequest())
    async with database_outage(admin_url, database_url):
        await eventually(lambda: _is(503, http, server, "/health"), within=5)
        status, health = await get_json(http, server, "/health")
        assert (status, health["status"]) == (503, "unhealthy")
        assert health["checks"]["database"]["status"] == "down"
        status, database = await get_json(http, server, "/health/database")
        assert (status, database["status"]) == (503, "unhealthy")
        assert database["error"]
        assert "pool" in database
        status, _ = await get_json(http, server, "/health/jackpot")
        assert status == 503

        # A call that fails for want of a database is our error, not the caller's.
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.GetStatistics(pb.GetStatisticsRequest())
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        # An aborted call is recorded when its handler unwinds, just after the status is
        # sent: the caller can ask before that has run, so allow the loop a moment.
        await eventually(lambda: _counted(http, server, 2), within=2)
        _, metrics = await get_json(http, server, "/metrics")
        assert (metrics["total_requests"], metrics["error_count"]) == (2, 1)
        assert metrics["error_rate"] == pytest.approx(0.5)
        assert metrics["error_rate_percent"] == pytest.approx(50.0)
    await eventually(lambda: _is(200, http, server, "/health"), within=10)
    await eventually(lambda: _is(200, http, server, "/health/database"), within=5)


async def _counted(http: aiohttp.ClientSession, running: RunningServer, calls: int) -> bool:
    _, metrics = await get_json(http, running, "/metrics")
    return bool(metrics["total_requests"] >= calls)


async def _is(
    expected: int, http: aiohttp.ClientSession, running: RunningServer, path: str
) -> bool:
    return await status_of(http, running, path) == expected


async def test_shutdown_reports_503_while_draining_then_closes_the_port(
    settings: Settings, database_url: str, http: aiohttp.ClientSession
) -> None:
    running = await start_server(
        dataclasses.replace(settings, batch=dataclasses.replace(settings.batch, enabled=False)),
        database_url,
        port=0,
    )
    stopping: asyncio.Task[None] | None = None
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
            await psycopg.AsyncConnection.connect(database_url) as blocker,
        ):
            await blocker.execute("SELECT 1 FROM jackpots FOR UPDATE")  # hold every pool row
            win = asyncio.ensure_future(
                Stub(channel).Win(
                    pb.WinRequest(
                        group=pb.JACKPOT_GROUP_MINOR,
                        game_id="slots",
                        user_id=str(uuid.uuid4()),
                        win_amount=1,
                    )
                )
            )
            await eventually(lambda: _waits_for_lock(database_url), within=5)

            stopping = asyncio.create_task(running.stop(grace=5.0))
            await asyncio.sleep(0.1)  # the Win is in flight: the server is draining
            status, health = await get_json(http, running, "/health")
            assert (status, health["status"]) == (503, "shutting_down")

            await blocker.commit()  # let the Win finish; the drain then completes
            assert (await win).actual_win_amount == 1
    finally:
        if stopping is None:
            await running.stop(grace=1.0)
        else:
            await asyncio.wait_for(asyncio.shield(stopping), 10)
    with pytest.raises(aiohttp.ClientConnectionError):
        await get_json(http, running, "/health")


async def _waits_for_lock(database_url: str) -> bool:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as watcher:
        cursor = await watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        )
        row = await cursor.fetchone()
    return row is not None and row[0] >= 1


async def test_a_taken_health_port_fails_the_start_and_leaves_no_connection_open(
    settings: Settings, database_url: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = dataclasses.replace(
            settings, health=dataclasses.replace(settings.health, port=taken.getsockname()[1])
        )
        with pytest.raises(OSError):
            await start_server(busy, database_url, port=0)

    async def none_open() -> bool:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE 'jackpot-%'"
            )
            return await cursor.fetchone() == (0,)

    # A closed connection's backend may take a moment to leave pg_stat_activity on a busy
    # machine; a leaked one stays.
    await eventually(none_open, within=3)


async def test_background_audit_exports_the_books_as_metrics(
    server: RunningServer, stub: Stub, http: aiohttp.ClientSession, database_url: str
) -> None:
    await stub.Contribute(pb.ContributeRequest(game_id="audit", wager_amount=10_000))
    assert server.auditor is not None
    await server.auditor.run_once()
    _, _, text = await get_text(http, server, "/metrics/prometheus")
    assert "jackpot_books_balanced 1.0" in text
    assert 'jackpot_ledger_discrepancy_minor_units{group="minor"} 0.0' in text

    # Money that appears without a ledger entry is caught on the next run.
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute(
            "UPDATE jackpots SET current_amount = current_amount + 7 WHERE jackpot_group = 'minor'"
        )
    await server.auditor.run_once()
    _, _, text = await get_text(http, server, "/metrics/prometheus")
    assert "jackpot_books_balanced 0.0" in text
    assert 'jackpot_ledger_discrepancy_minor_units{group="minor"} 7.0' in text
