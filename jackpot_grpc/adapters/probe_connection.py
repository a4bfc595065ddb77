"""The health probe's own database connection, apart from the pool Contribute uses.

A probe that borrowed from the pool would report the pool's queue, not the database:
under load it waits behind every call and times out although the database answers. One
dedicated autocommit connection, opened on first use and again after any failure, with a
statement timeout so a stuck query cannot hold it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from psycopg import AsyncConnection

from jackpot_grpc.adapters import repository as repo
from jackpot_grpc.adapters.database import connection_kwargs
from jackpot_grpc.config import Settings

APPLICATION_NAME = "jackpot-health-probe"


class ProbeConnection:
    def __init__(self, settings: Settings, database_url: str) -> None:
        self._url = database_url
        self._timeout = settings.health_probe_timeout
        self._kwargs = connection_kwargs(
            settings,
            database_url,
            application_name=APPLICATION_NAME,
            statement_timeout=max(0.001, self._timeout),
        )
        self._conn: AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()  # one round trip at a time on the one connection

    async def ping(self) -> None:
        """`SELECT 1` on the probe's connection; raises on any failure (and reconnects
        on the next call)."""
        async with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await AsyncConnection.connect(
                        self._url,
                        autocommit=True,
                        **self._kwargs,
                    )
                await repo.ping(self._conn)
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            await conn.close()
