"""The psycopg connection pool: created closed, opened and closed explicitly by its owner.

Every server connection carries the lock and statement timeouts (DB_LOCK_TIMEOUT,
DB_STATEMENT_TIMEOUT) in libpq's `options`, i.e. in the startup packet: they hold from the
first statement of every connection, reconnections included, at no extra round trip (a
`configure` callback running SET would cost one on every new connection). Behind
PgBouncer, which refuses (or, listed in `ignore_startup_parameters`, drops) `options`, set
the two timeouts to 0 here and on the role instead:
`ALTER ROLE jackpot SET lock_timeout = '2s'; ALTER ROLE jackpot SET statement_timeout = '5s'`.

A connection is checked before it is handed out without a round trip: an idle connection
has nothing to read, one the server closed (terminated, restarted) has its FATAL message
or end-of-file waiting. Finding one dead sweeps the idle ones at once, so the next request
waits for one new connection, not for the pool's one-second backoff between checks.
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.config import Settings

APPLICATION_NAME = "jackpot-service"

# The one spelling of the pool's type, for everyone who is handed it.
Pool = AsyncConnectionPool[AsyncConnection[Any]]


def server_options(settings: Settings, database_url: str) -> str | None:
    """libpq `options` with the timeouts, after any the URL already gives; 0 leaves a
    timeout to the server (or the role's setting)."""
    parts = [str(conninfo_to_dict(database_url).get("options") or "").strip()]
    for name, seconds in (
        ("lock_timeout", settings.db_lock_timeout),
        ("statement_timeout", settings.db_statement_timeout),
    ):
        if seconds > 0:
            parts.append(f"-c {name}={round(seconds * 1000)}")
    joined = " ".join(p for p in parts if p)
    return joined or None


class IdleCheck:
    """The pool's `check`: zero round trips for a live connection (see the module doc)."""

    def __init__(self) -> None:
        self.pool: Pool | None = None

    async def __call__(self, conn: AsyncConnection[Any]) -> None:
        if not conn.closed and not _has_input(conn):
            return
        if not conn.closed:
            try:  # something to read: most likely the server's goodbye; make sure
                await AsyncConnectionPool.check_connection(conn)
                return
            except psycopg.Error:
                pass
        if self.pool is not None:
            await self.pool.check()  # the others died with it: replace them all now
        raise psycopg.OperationalError("the server closed the connection")


def _has_input(conn: AsyncConnection[Any]) -> bool:
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.OperationalError):
        return True
    return bool(readable)


def create_pool(settings: Settings, database_url: str) -> Pool:
    check = IdleCheck()
    kwargs: dict[str, Any] = {"application_name": APPLICATION_NAME, "connect_timeout": 3}
    options = server_options(settings, database_url)
    if options:
        kwargs["options"] = options
    pool: Pool = AsyncConnectionPool(
        database_url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        timeout=settings.pool_timeout,
        # Past this many callers queued for a connection, the next is refused at once
        # (RESOURCE_EXHAUSTED) instead of waiting out the timeout: overload fails fast.
        max_waiting=settings.pool_max_waiting,
        open=False,
        # A connection the server killed is detected before it is handed out.
        check=check,
        kwargs=kwargs,
        # No exponential backoff after an outage: a failed background reconnect gives up
        # at once, and the next request for a connection (the health probe asks every
        # interval) tries again, so the pool follows the database back within a probe.
        reconnect_timeout=0,
        name="jackpot",
    )
    check.pool = pool
    return pool
