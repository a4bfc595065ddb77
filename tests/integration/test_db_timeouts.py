"""Issue 16, item 5: every transaction has a lock and statement timeout; a call that cannot
get its locks fails fast with UNAVAILABLE + LOCK_TIMEOUT, logged and counted; readiness
follows a database that answers but cannot write; a reset pool reconnects in one round
trip per connection, with no check queries and no backoff."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc
from psycopg.conninfo import make_conninfo

from jackpot_grpc.adapters.database import create_db_pool, server_options
from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import start_server
from jackpot_grpc.observability.metrics import DATABASE_TIMEOUTS
from jackpot_grpc.service.jackpot import JackpotService
from testkit.figures import report
from testkit.ledger import table_counts
from testkit.outage import database_name
from testkit.round_trip_proxy import round_trip_proxy
from testkit.tools import require_tcp_server


def lock_timeouts() -> int:
    return int(DATABASE_TIMEOUTS.labels("lock")._value.get())


# Every connection of the server: its pool, the health probe's, the side pool's.
SERVICE_CONNECTIONS = "jackpot%"


def terminate_service_backends(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND application_name LIKE %s",
            (name, SERVICE_CONNECTIONS),
        )
        for _ in range(100):  # until the backends have gone
            left = admin.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = %s AND application_name LIKE %s",
                (name, SERVICE_CONNECTIONS),
            ).fetchone()
            if left is not None and left[0] == 0:
                return
            time.sleep(0.02)


def test_settings_and_options() -> None:
    settings = Settings.from_env({})
    assert (settings.database.lock_timeout, settings.database.statement_timeout) == (2.0, 5.0)
    url = "postgresql://u@h/db?options=-c%20search_path%3Dpublic"
    assert server_options(settings, url) == (
        "-c search_path=public -c lock_timeout=2000 -c statement_timeout=5000"
    )
    off = Settings.from_env({"DB_LOCK_TIMEOUT": "0", "DB_STATEMENT_TIMEOUT": "0"})
    assert server_options(off, "postgresql://u@h/db") is None


async def test_a_held_lock_fails_the_call_fast_with_lock_timeout(
    settings: Settings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    quick = dataclasses.replace(
        settings,
        database=dataclasses.replace(settings.database, lock_timeout=0.3),
        batch=dataclasses.replace(settings.batch, enabled=False),
    )
    running = await start_server(quick, database_url, port=0)
    holder = await psycopg.AsyncConnection.connect(database_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
            # Every server connection runs with the timeouts.
            async with running.db_pool.connection() as conn:
                cursor = await conn.execute("SHOW lock_timeout")
                assert await cursor.fetchone() == ("300ms",)
                cursor = await conn.execute("SHOW statement_timeout")
                assert await cursor.fetchone() == ("5s",)

            # The audit the server runs at start would meet the lock too (and count).
            for _ in range(200):
                if running.auditor.runs + running.auditor.adopted + running.auditor.failures:
                    break
                await asyncio.sleep(0.02)
            written = table_counts(database_url)
            await holder.execute("LOCK TABLE jackpots IN ACCESS EXCLUSIVE MODE")
            before = lock_timeouts()
            request = pb.ContributeRequest(
                game_id="locked", wager_amount=1000, idempotency_key=uuid.uuid4().hex
            )
            started = time.perf_counter()
            with caplog.at_level(logging.WARNING), pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Contribute(request, timeout=10)
            elapsed = time.perf_counter() - started
            await holder.rollback()

            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            # Time is the property: the lock timeout (0.3 s) fired, not the 10 s deadline
            # nor the holder's release; 3 s is 10x the timeout.
            assert elapsed < 3.0
            assert table_counts(database_url) == written  # the refused call wrote nothing
            status = rpc_status.from_call(raised.value)
            assert status is not None
            infos, retries = [], []
            for detail in status.details:
                info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    infos.append(info)
                elif detail.Unpack(retry):
                    retries.append(retry)
            assert [(i.reason, i.domain) for i in infos] == [("LOCK_TIMEOUT", "jackpot.v1")]
            assert retries and retries[0].retry_delay.ToNanoseconds() > 0
            # At least this call (the background audit may also have waited on the lock).
            assert lock_timeouts() >= before + 1
            assert any("lock timeout" in r.getMessage() for r in caplog.records)

            # The lock is gone: the same call, retried with its key, is applied once.
            reply = await stub.Contribute(request, timeout=10)
            again = await stub.Contribute(request, timeout=10)
            assert (reply.replayed, again.replayed) == (False, True)
            assert again.contribution_id == reply.contribution_id > 0
            assert table_counts(database_url) == {
                **written,
                "contributions": written["contributions"] + 1,
            }
    finally:
        await holder.close()
        await running.stop(grace=1.0)


async def _serving(stub: health_pb2_grpc.HealthStub) -> int:
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    return int(reply.status)


async def _wait_for(stub: health_pb2_grpc.HealthStub, status: int) -> None:
    for _ in range(100):
        if await _serving(stub) == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"health never became {status}")


async def test_readiness_follows_a_read_only_database(
    settings: Settings, database_url: str, admin_url: str
) -> None:
    name = database_name(database_url)
    running = await start_server(settings, database_url, port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert await _serving(health) == health_pb2.HealthCheckResponse.SERVING
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
            await asyncio.to_thread(terminate_service_backends, admin_url, name)
            await _wait_for(health, health_pb2.HealthCheckResponse.NOT_SERVING)
            assert "cannot take writes" in (running.probe.last_error or "")

            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f"ALTER DATABASE {name} RESET default_transaction_read_only")
            await asyncio.to_thread(terminate_service_backends, admin_url, name)
            await _wait_for(health, health_pb2.HealthCheckResponse.SERVING)
    finally:
        await running.stop(grace=1.0)


@pytest.mark.system_postgres
async def test_reconnecting_after_a_reset_costs_one_round_trip(
    settings: Settings, database_url: str, admin_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = require_tcp_server(database_url)  # the proxy speaks TCP
    name = database_name(database_url)
    async with round_trip_proxy(host, port) as proxy:
        url = make_conninfo(
            database_url,
            host="127.0.0.1",
            port=str(proxy.port),
            sslmode="disable",  # no SSL or GSS negotiation: one round trip per connect
            gssencmode="disable",
        )
        pool = create_db_pool(
            dataclasses.replace(
                settings, database=dataclasses.replace(settings.database, pool_min_size=2)
            ),
            url,
        )
        await pool.open(wait=True, timeout=10)
        service = JackpotService(pool)
        try:
            await service.ping()
            before = proxy.round_trips
            await service.ping()
            healthy = proxy.round_trips - before

            await asyncio.to_thread(terminate_service_backends, admin_url, name)
            for _ in range(100):
                if proxy.open_connections == 0:
                    break
                await asyncio.sleep(0.02)
            opened = len(proxy.per_connection)
            started = time.perf_counter()
            with caplog.at_level(logging.INFO, logger="psycopg.pool"):
                await service.ping()  # succeeds: the dead connections are never handed out
            elapsed = time.perf_counter() - started
            await asyncio.sleep(0.2)  # background replacements finish their startup
            fresh = sorted(proxy.per_connection[opened:])
        finally:
            await pool.close()
    # A healthy checkout costs no check query: only the ping's own statements.
    assert healthy <= 3, healthy
    # After the reset: the connection that served the ping paid one startup round trip on
    # top of the ping's own; its replacements only their startup; no check queries.
    assert fresh and fresh[-1] == healthy + 1, (healthy, fresh)
    assert all(trips == 1 for trips in fresh[:-1]), (healthy, fresh)
    # And no backoff between checks: psycopg_pool sleeps (~1 s, then doubling) after each
    # failed check but the first, and logs each; at most one may fail.
    failed = [r for r in caplog.records if "failed check" in r.getMessage()]
    assert len(failed) <= 1, [r.getMessage() for r in failed]
    report("reconnect_after_reset", {"ping_s": round(elapsed, 4), "failed_checks": len(failed)})
