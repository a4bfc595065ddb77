"""A group-commit batch costs a fixed, small number of round trips to PostgreSQL (counted
by a TCP proxy): the lock and key lookup in one flight, the write and COMMIT in another."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from jackpot_grpc.adapters.batch_connection import BatchConnection
from jackpot_grpc.adapters.database import create_db_pool
from jackpot_grpc.adapters.unit_of_work import pipelined_transaction
from jackpot_grpc.config import Settings
from jackpot_grpc.domain.validation import contribute_command
from jackpot_grpc.service.jackpot import BatchPlanner, JackpotService
from testkit.round_trip_proxy import RoundTripProxy, round_trip_proxy
from testkit.tools import require_tcp_server


@asynccontextmanager
async def proxied(database_url: str) -> AsyncIterator[tuple[RoundTripProxy, str]]:
    host, port = require_tcp_server(database_url)  # the proxy speaks TCP
    async with round_trip_proxy(host, port) as proxy:
        url = make_conninfo(
            database_url,
            host="127.0.0.1",
            port=str(proxy.port),
            sslmode="disable",
            gssencmode="disable",
        )
        yield proxy, url


@pytest.mark.system_postgres
async def test_a_contribute_batch_costs_two_round_trips(
    settings: Settings, database_url: str
) -> None:
    async with proxied(database_url) as (proxy, url):
        pool = create_db_pool(
            dataclasses.replace(
                settings,
                database=dataclasses.replace(settings.database, pool_min_size=1, pool_max_size=1),
            ),
            url,
        )
        await pool.open(wait=True, timeout=10)
        service = JackpotService(pool)
        try:
            keyed = [contribute_command("g", 1000, f"k{i}", "c") for i in range(10)]
            await service.contribute_many(keyed[:1])  # connection opened, statements known
            before = proxy.round_trips
            results = await service.contribute_many(keyed[1:])
            trips = proxy.round_trips - before
        finally:
            await pool.close()
    assert len(results) == 9
    assert trips == 2, trips


async def test_a_pipelined_transaction_gives_its_connection_back_as_it_found_it(
    settings: Settings, database_url: str
) -> None:
    pool = create_db_pool(
        dataclasses.replace(
            settings,
            database=dataclasses.replace(settings.database, pool_min_size=1, pool_max_size=1),
        ),
        database_url,
    )
    await pool.open(wait=True, timeout=10)
    try:
        async with pool.connection() as first:
            before = await (await first.execute("SELECT version FROM jackpots")).fetchall()
        with pytest.raises(ZeroDivisionError):
            async with pipelined_transaction(pool) as conn:
                assert conn.autocommit
                await conn.execute("BEGIN")
                await conn.execute("UPDATE jackpots SET version = version + 1")
                1 / 0  # noqa: B018 - the caller fails mid-transaction
        async with pool.connection() as again:
            assert again is conn
            assert not again.autocommit
            versions = await (await again.execute("SELECT version FROM jackpots")).fetchall()
    finally:
        await pool.close()
    assert versions == before  # the update was rolled back


@pytest.mark.system_postgres
def test_the_batch_thread_writes_a_batch_in_one_round_trip_and_three_when_refused(
    settings: Settings, database_url: str
) -> None:
    """Pools as its last batch left them and new keys: one guarded statement. Another
    writer moved a pool: that statement writes nothing, then the two flights."""

    async def measured() -> tuple[int, int]:
        async with proxied(database_url) as (proxy, url):
            writer = BatchConnection(settings, url)
            try:
                await asyncio.to_thread(apply, writer, 0)  # connected, pools known
                before = proxy.round_trips
                await asyncio.to_thread(apply, writer, 1)
                one = proxy.round_trips - before
                with psycopg.connect(database_url, autocommit=True) as other:  # not proxied
                    other.execute("UPDATE jackpots SET version = version + 1")
                before = proxy.round_trips
                await asyncio.to_thread(apply, writer, 2)
                return one, proxy.round_trips - before
            finally:
                writer.close()

    def apply(writer: BatchConnection, batch: int) -> None:
        commands = [contribute_command("g", 1000, f"t{batch}-{i}", "c") for i in range(5)]
        planner = BatchPlanner(commands)
        planner.outcome(writer.contribute(planner.keys, planner))

    assert asyncio.run(measured()) == (1, 3)
