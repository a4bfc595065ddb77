"""The psycopg connection pool: created closed, opened and closed explicitly by its owner.

Behind PgBouncer in transaction mode (DB_PGBOUNCER=1) consecutive transactions of one pool
connection may run on different server connections, so nothing may live in the session:
the pool's connections never prepare statements (prepare_threshold=None), and the service
keeps no other session state anyway: isolation is set per transaction (SET TRANSACTION),
timeouts with set_config(..., is_local => true), advisory locks are transaction-scoped
(pg_try_advisory_xact_lock), and nothing LISTENs. docs/REPLICAS.md, "Behind PgBouncer".
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.config import Settings

APPLICATION_NAME = "jackpot-service"
SIDE_APPLICATION_NAME = "jackpot-on-demand"

# The one spelling of the pool's type, for everyone who is handed it.
Pool = AsyncConnectionPool[AsyncConnection[Any]]


def connection_kwargs(settings: Settings) -> dict[str, Any]:
    """What every pool connection is opened with."""
    kwargs: dict[str, Any] = {"application_name": APPLICATION_NAME, "connect_timeout": 3}
    if settings.pgbouncer:
        # Server-side prepared statements belong to a server session, which a transaction
        # pooler hands to another client between transactions.
        kwargs["prepare_threshold"] = None
    return kwargs


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
        kwargs=connection_kwargs(settings),
        # No exponential backoff after an outage: a failed background reconnect gives up
        # at once, and the next request for a connection (the health probe asks every
        # interval) tries again, so the pool follows the database back within a probe.
        reconnect_timeout=0,
        name="jackpot",
    )


def create_side_pool(settings: Settings, database_url: str) -> Pool:
    """The small pool for expensive reads on demand (ledger audits, long metric periods):
    they can never take a connection Contribute needs, and every statement on it is cut
    off after JACKPOT_SIDE_STATEMENT_TIMEOUT. Past a few waiters, callers are refused."""
    timeout_ms = max(1, round(settings.side_statement_timeout * 1000))
    return AsyncConnectionPool(
        database_url,
        min_size=0,
        max_size=max(1, settings.side_pool_max_size),
        timeout=settings.pool_timeout,
        max_waiting=4 * max(1, settings.side_pool_max_size),
        open=False,
        check=AsyncConnectionPool.check_connection,
        kwargs={
            "application_name": SIDE_APPLICATION_NAME,
            "connect_timeout": 3,
            "options": f"-c statement_timeout={timeout_ms}",
        },
        reconnect_timeout=0,
        name="jackpot-on-demand",
    )
