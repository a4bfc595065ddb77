"""Every kind of database connection is opened by its one function in adapters.database,
which sets its application_name (what pg_stat_activity shows an operator) and its connect
timeout (libpq waits for ever without one). Each kind is opened against the real test
database and asked what the server sees."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from jackpot_grpc.adapters import database, ledger_store
from jackpot_grpc.config import Settings

SEEN = "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"


@dataclasses.dataclass(frozen=True)
class Seen:
    """What the server and libpq say about one connection of a kind."""

    application_name: str
    connect_timeout: str | None


def _seen_sync(conn: psycopg.Connection[Any]) -> Seen:
    row = conn.execute(SEEN).fetchone()
    assert row is not None
    name = row["application_name"] if isinstance(row, dict) else row[0]
    return Seen(str(name), conn.info.get_parameters().get("connect_timeout"))


async def _seen_async(conn: psycopg.AsyncConnection[Any]) -> Seen:
    cursor = await conn.execute(SEEN)
    row = await cursor.fetchone()
    assert row is not None
    return Seen(str(row[0]), conn.info.get_parameters().get("connect_timeout"))


async def _service_pool(settings: Settings, url: str) -> Seen:
    async with database.create_db_pool(settings, url) as db_pool, db_pool.connection() as conn:
        return await _seen_async(conn)


async def _side_pool(settings: Settings, url: str) -> Seen:
    db_pool = database.create_side_db_pool(settings, url)
    async with db_pool, db_pool.connection() as conn:
        return await _seen_async(conn)


async def _probe(settings: Settings, url: str) -> Seen:
    async with await database.connect_probe(settings, url) as conn:
        return await _seen_async(conn)


async def _listener(settings: Settings, url: str) -> Seen:
    async with await database.connect_listener(settings, url) as conn:
        return await _seen_async(conn)


async def _ops(settings: Settings, url: str) -> Seen:
    with database.connect_ops(url, timeout=3) as conn:
        return _seen_sync(conn)


async def _migration(settings: Settings, url: str) -> Seen:
    with database.connect_migration(url) as conn:
        return _seen_sync(conn)


async def _ledger(settings: Settings, url: str) -> Seen:
    with ledger_store.connect(database.ledger_conninfo(settings, url)) as conn:
        return _seen_sync(conn)


async def _failover_watch(settings: Settings, url: str) -> Seen:
    conninfo, _ = database.failover_watch_conninfo(settings, url)
    with ledger_store.connect(conninfo) as conn:
        return _seen_sync(conn)


async def _ops_ledger(settings: Settings, url: str) -> Seen:
    with ledger_store.connect(database.ops_conninfo(url)) as conn:
        return _seen_sync(conn)


Opener = Callable[[Settings, str], Awaitable[Seen]]

# The kind, how it is opened, and what it must show (the settings below connect within 3 s).
KINDS: list[tuple[str, Opener, Seen]] = [
    ("service pool", _service_pool, Seen("jackpot-service", "3")),
    ("side pool", _side_pool, Seen("jackpot-on-demand", "3")),
    ("health probe", _probe, Seen("jackpot-health-probe", "3")),
    ("change listener", _listener, Seen("jackpot-listener", "3")),
    ("operator command", _ops, Seen("jackpot-ops", "3")),
    ("migration", _migration, Seen("jackpot-migrate", "5")),
    ("ledger", _ledger, Seen("jackpot-ledger", "3")),
    ("failover watch", _failover_watch, Seen("jackpot-failover-watch", "3")),
    ("operator's ledger command", _ops_ledger, Seen("jackpot-ops", "5")),
]


@pytest.mark.parametrize(
    ("opener", "expected"), [(o, e) for _, o, e in KINDS], ids=[k for k, _, _ in KINDS]
)
async def test_each_kind_of_connection_names_itself_and_bounds_its_connect(
    settings: Settings, database_url: str, opener: Opener, expected: Seen
) -> None:
    bounded = dataclasses.replace(
        settings, database=dataclasses.replace(settings.database, connect_timeout=3.0)
    )
    assert "connect_timeout" not in conninfo_to_dict(database_url)  # ours, not the URL's
    assert await opener(bounded, database_url) == expected
