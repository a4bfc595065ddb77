"""Graceful shutdown: NOT_SERVING first, in-flight calls finish, new calls are refused.

These tests start their own servers: the `server` fixture stops its server in teardown.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc
from psycopg import AsyncConnection

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import start_server
from testkit.grpc_health import NOT_SERVING, SERVING
from testkit.processes import serve_process
from testkit.random_refs import random_game_id, random_key

GRACE = 5.0


async def wait_until_blocked_on_a_lock(conn: AsyncConnection[Any], within: float = 5) -> None:
    started = time.monotonic()
    while True:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        row = await cur.fetchone()
        if row is not None and row[0] >= 1:
            return
        assert time.monotonic() - started < within, "the call never reached the database"
        await asyncio.sleep(0.05)


async def test_stop_drains_the_call_in_flight_and_refuses_new_ones(
    settings: Settings, database_url: str
) -> None:
    running = await start_server(settings, database_url, port=0)
    key = random_key("in-flight")
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
            await AsyncConnection.connect(database_url) as blocker,
            await AsyncConnection.connect(database_url, autocommit=True) as observer,
        ):
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == SERVING

            # Hold the pools, so the Contribute below is in flight when the stop begins.
            await blocker.execute("SELECT * FROM jackpots FOR UPDATE")
            in_flight = asyncio.ensure_future(
                stub.Contribute(
                    pb.ContributeRequest(
                        game_id=random_game_id(), wager_amount=1000, idempotency_key=key
                    ),
                    timeout=15,
                )
            )
            await wait_until_blocked_on_a_lock(observer)

            started = time.monotonic()
            stopping = asyncio.create_task(running.stop(grace=GRACE))
            # Health turns NOT_SERVING before anything else stops.
            changed = await asyncio.wait_for(watch.read(), 2)
            assert changed.status == NOT_SERVING
            watch.cancel()

            await asyncio.sleep(0.3)
            assert not in_flight.done()
            assert not stopping.done()  # the stop waits for the call in flight
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetPools(pb.GetPoolsRequest(), timeout=2)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE

            await blocker.rollback()  # release: the call in flight can finish
            reply = await asyncio.wait_for(in_flight, GRACE)
            assert reply.total_contribution == 10
            assert reply.replayed is False
            await asyncio.wait_for(stopping, GRACE + 5)
            assert time.monotonic() - started < GRACE  # drained, not cut off by the grace

            row = await (
                await observer.execute(
                    "SELECT id, wager_amount FROM contributions WHERE idempotency_key = %s",
                    (key,),
                )
            ).fetchone()
            assert row == (reply.contribution_id, 1000)

            with pytest.raises(grpc.aio.AioRpcError) as after:
                await stub.Contribute(
                    pb.ContributeRequest(game_id=random_game_id(), wager_amount=1000), timeout=2
                )
            assert after.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        if running.db_pool.closed is False:
            await running.stop(grace=0)


def test_sigterm_stops_jackpot_serve_cleanly(database_url: str, tmp_path: Path) -> None:
    process = serve_process(database_url, tmp_path / "logs", JACKPOT_SHUTDOWN_GRACE="5")
    try:
        process.start(timeout=30)
        process.signal(signal.SIGTERM)
        code = process.wait(timeout=15)
    finally:
        if process.alive():
            process.stop(timeout=0)
    assert code == 0, process.output()[-3000:]
