"""One transaction per use case: commit on success, roll back on any error.

Database faults become `Unavailable`, so no caller ever mistakes them for an answer; a
statement stopped by the lock or statement timeout becomes `LockTimeout` (retryable),
logged and counted (jackpot_db_timeouts_total).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import PoolClosed, PoolTimeout, TooManyRequests

from jackpot_grpc.adapters.database import Pool
from jackpot_grpc.domain.errors import LockTimeout, OutOfRange, Overloaded, Unavailable
from jackpot_grpc.metrics import DATABASE_TIMEOUTS

log = logging.getLogger(__name__)


@asynccontextmanager
async def transaction(
    pool: Pool,
) -> AsyncIterator[AsyncConnection[Any]]:
    """A connection inside a transaction; committed when the block exits cleanly.

    The commit happens before this returns, so whatever the caller answers afterwards is
    durable. A commit that fails (connection lost) raises Unavailable: the outcome is then
    unknown to us, and the caller's retry with the same idempotency key settles it.
    """
    try:
        async with pool.connection() as conn:
            yield conn
    except TooManyRequests as exc:
        raise Overloaded("too many calls waiting for a database connection; retry") from exc
    except PoolTimeout as exc:
        raise Unavailable("database unavailable: no connection within the pool timeout") from exc
    except PoolClosed as exc:
        raise Unavailable("service is shutting down") from exc
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
        kind = "lock" if isinstance(exc, psycopg.errors.LockNotAvailable) else "statement"
        DATABASE_TIMEOUTS.labels(kind).inc()
        log.warning("database %s timeout (SQLSTATE %s): %s", kind, exc.sqlstate, exc)
        raise LockTimeout(
            f"database {kind} timeout: the call could not get its locks in time; retry"
        ) from exc
    except psycopg.errors.NumericValueOutOfRange as exc:
        raise OutOfRange("an amount would exceed the ledger's int64 range") from exc
    except psycopg.OperationalError as exc:
        raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc
