"""The psycopg connection pool: created closed, opened and closed explicitly by its owner."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.config import Settings

APPLICATION_NAME = "jackpot-service"

# The one spelling of the pool's type, for everyone who is handed it.
Pool = AsyncConnectionPool[AsyncConnection[Any]]


def create_pool(settings: Settings, database_url: str) -> Pool:
    return AsyncConnectionPool(
        database_url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        timeout=settings.pool_timeout,
        # Past this many callers queued for a connection, the next is refused at once
        # (RESOURCE_EXHAUSTED) instead of waiting out the timeout: overload fails fast.
        max_waiting=settings.pool_max_waiting,
        open=False,
        # A connection the server killed is detected before it is handed out.
        check=AsyncConnectionPool.check_connection,
        kwargs={"application_name": APPLICATION_NAME, "connect_timeout": 3},
        # No exponential backoff after an outage: a failed background reconnect gives up
        # at once, and the next request for a connection (the health probe asks every
        # interval) tries again, so the pool follows the database back within a probe.
        reconnect_timeout=0,
        name="jackpot",
    )
