"""A German server's cancelled synchronous-replication wait is never acknowledged.

PostgreSQL answers a COMMIT whose standby wait was cancelled (pg_cancel_backend) as done,
with a WARNING in the server's lc_messages. On a PostgreSQL of the test's own whose
lc_messages is German (testkit/localized_postgres.py), the caller must get UNAVAILABLE
COMMIT_OUTCOME_UNKNOWN, and the key retried replays the row that did commit. The same rule
with a WARNING raised at COMMIT by a trigger, on the test database, is checked quickly in
tests/integration/test_commit_warnings.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.adapters import migrations
from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import start_server
from testkit.calls import error_reason
from testkit.localized_postgres import GermanPostgres, german_postgres
from testkit.postgres_cluster import cancel_sync_rep_waits
from testkit.scratch import database_conninfo


@pytest.fixture(scope="module")
def german() -> Iterator[GermanPostgres]:
    with german_postgres() as server:
        yield server


async def test_a_german_servers_cancelled_standby_wait_is_never_acknowledged(
    settings: Settings, german: GermanPostgres
) -> None:
    """The real thing on a server whose lc_messages is German: a COMMIT waiting for a
    synchronous standby that never comes, its wait cancelled (pg_cancel_backend), answered
    by PostgreSQL as committed with "WARNUNG: storniere Warten auf synchrone Replikation".
    Before: OK (the English words were looked for). Now: COMMIT_OUTCOME_UNKNOWN."""
    name = "jackpot_german"
    with psycopg.connect(german.admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    url = database_conninfo(german.admin_url, name)
    migrations.upgrade(url)
    tuned = dataclasses.replace(
        settings, database=dataclasses.replace(settings.database, commit_timeout=0.0)
    )
    server = await start_server(tuned, url, port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
            request = pb.ContributeRequest(
                game_id="german", wager_amount=1000, idempotency_key="de-1"
            )
            german.set_system("synchronous_standby_names", "ghost")
            call = asyncio.ensure_future(stub.Contribute(request, timeout=20))
            assert await asyncio.to_thread(cancel_sync_rep_waits, url) >= 1
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await asyncio.wait_for(call, 10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
            assert error_reason(caught.value) == "COMMIT_OUTCOME_UNKNOWN"
            german.set_system("synchronous_standby_names", None)
            replay = await stub.Contribute(request, timeout=10)
            assert replay.replayed  # it had committed locally
    finally:
        german.set_system("synchronous_standby_names", None)
        await server.stop(grace=1.0)
    assert "storniere Warten auf synchrone Replikation" in german.log
