"""Past the connection queue, calls are refused at once: RESOURCE_EXHAUSTED, not a timeout.

Contribute has its own bounded queue (the batcher); every other call that needs the
database (Win, ContributeBatch, reads, UpdateConfig) waits for a pool connection, and the
pool lets at most DB_POOL_MAX_WAITING callers wait.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator

import aiohttp
import grpc
import psycopg
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer, start_server

CALLS = 6
# Far past how long a refusal takes, so "refused while the connection was held" can only
# mean "at once, not after the pool timeout".
POOL_TIMEOUT = 60.0


@pytest.fixture
async def small_server(settings: Settings, database_url: str) -> AsyncIterator[RunningServer]:
    tight = dataclasses.replace(
        settings,
        database=dataclasses.replace(
            settings.database,
            pool_min_size=1,
            pool_max_size=1,
            pool_max_waiting=1,
            pool_timeout=POOL_TIMEOUT,
        ),
    )
    running = await start_server(tight, database_url, port=0)
    yield running
    await running.stop(grace=1.0)


async def test_calls_past_the_connection_queue_get_resource_exhausted_at_once(
    small_server: RunningServer, database_url: str
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_server.port}") as channel:
        stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
        # Connected and warm. The server's own start-up work (the first ledger audit, the
        # health probe) shares the one connection, so the warm-up may itself be turned away.
        warm_up_refused = 0
        for _ in range(50):
            try:
                await stub.GetConfig(pb.GetConfigRequest())
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                warm_up_refused += 1
                await asyncio.sleep(0.1)

        async def win() -> grpc.StatusCode:
            request = pb.WinRequest(
                group=pb.JACKPOT_GROUP_MINOR,
                game_id="slots",
                user_id=str(uuid.uuid4()),
                win_amount=1,
            )
            try:
                await stub.Win(request, timeout=2 * POOL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        # The only connection is taken: one caller may wait for it, the rest may not.
        async with small_server.db_pool.connection():
            calls = [asyncio.create_task(win()) for _ in range(CALLS)]
            # All but the one waiting are answered while the connection is still held: at
            # once, not after the pool timeout (a tenth of it is the wait's ceiling here).
            async with asyncio.timeout(POOL_TIMEOUT / 10):
                while sum(c.done() for c in calls) < CALLS - 1:
                    pending = [c for c in calls if not c.done()]
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            refused = [c.result() for c in calls if c.done()]
        codes = [await c for c in calls]

    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    # (The server's health probe may hold the one waiting place: then all are refused.)
    assert len(refused) >= CALLS - 1, codes
    assert set(refused) == {grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM wins").fetchone()
    assert row is not None and row[0] == codes.count(grpc.StatusCode.OK)  # refused: no trace

    # Each refusal is counted where overload is looked for: jackpot_refusals_total (and the
    # /metrics JSON's refusals), like admission's own.
    refused_calls = warm_up_refused + codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    base = f"http://127.0.0.1:{small_server.health_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/metrics") as response:
            summary = await response.json()
        async with http.get(f"{base}/metrics/prometheus") as response:
            text = await response.text()
    assert summary["refusals"]["database_pool"] == {"waiting_limit": refused_calls}, summary
    series = 'jackpot_refusals_total{layer="database_pool",reason="waiting_limit"}'
    assert f"{series} {float(refused_calls)}" in text.splitlines()
