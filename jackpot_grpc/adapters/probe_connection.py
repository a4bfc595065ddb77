"""The health probe's own database connection, apart from the pool Contribute uses.

A probe that borrowed from the pool would report the pool's queue, not the database:
under load it waits behind every call and times out although the database answers. One
dedicated autocommit connection, opened on first use and again after any failure, with a
statement timeout so a stuck query cannot hold it.

`write` commits the process's heartbeat row (migration 0011) within a bound of its own
(adapters.commit_bound: the socket is shut, never a cancel), so readiness covers writes:
a COMMIT held by a synchronous standby that is gone fails the probe instead of hanging it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import AsyncConnection

from jackpot_grpc.adapters import database_liveness
from jackpot_grpc.adapters.commit_bound import bounded_commit
from jackpot_grpc.adapters.database import connect_probe
from jackpot_grpc.config import Settings

log = logging.getLogger(__name__)


class ProbeConnection:
    def __init__(self, settings: Settings, database_url: str) -> None:
        self._settings = settings
        self._url = database_url
        self._timeout = settings.health.probe_timeout
        self._conn: AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()  # one round trip at a time on the one connection
        self.process = f"{socket.gethostname()}:{os.getpid()}"
        # Told which cluster and timeline each new connection reached (failover_watch).
        self.on_connect: Callable[[database_liveness.ClusterIdentity], None] | None = None
        self._identity_unreadable = False

    async def _connected(self) -> AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            conn = await connect_probe(self._settings, self._url)
            if self.on_connect is not None:
                try:
                    identity = await database_liveness.cluster_identity(conn)
                except psycopg.Error as exc:  # a server that hides pg_control_*: not fatal
                    if not self._identity_unreadable:
                        log.warning("database identity unreadable, failovers not tracked: %s", exc)
                    self._identity_unreadable = True
                except BaseException:
                    await conn.close()
                    raise
                else:
                    self.on_connect(identity)
            self._conn = conn
        return self._conn

    async def ping(self) -> None:
        """The database answers and takes writes (database_liveness.ping) on the probe's
        connection; raises on any failure (and reconnects on the next call)."""
        async with self._lock:
            try:
                await database_liveness.ping(await self._connected())
            except BaseException:
                await self.close()
                raise

    async def write(self) -> None:
        """Commit the heartbeat row within the probe's timeout; raises on any failure
        (CommitOutcomeUnknown when the commit did not answer in time)."""
        async with self._lock:
            try:
                conn = await self._connected()
                async with bounded_commit(conn, self._timeout) as committing:
                    committing()
                    await database_liveness.heartbeat(conn, self.process)
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            await conn.close()
