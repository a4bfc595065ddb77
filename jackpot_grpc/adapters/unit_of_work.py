"""One transaction per use case: commit on success, roll back on any error.

Database faults become `Unavailable`, so no caller ever mistakes them for an answer; a
statement stopped by the lock or statement timeout becomes `LockTimeout` (retryable),
logged and counted (jackpot_db_timeouts_total). The isolation level is the caller's choice
of unit of work, never a statement it runs.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import PoolClosed, PoolTimeout, TooManyRequests

from jackpot_grpc.adapters.database import Pool
from jackpot_grpc.domain.errors import (
    LockTimeout,
    OutOfRange,
    Overloaded,
    ShuttingDown,
    Unavailable,
)
from jackpot_grpc.metrics import DATABASE_TIMEOUTS

log = logging.getLogger(__name__)


class KeyTaken(Exception):
    """An insert lost a race for an idempotency key (its unique index refused the row):
    the use case runs again and finds the winner's row."""


class Isolation(enum.Enum):
    """READ_COMMITTED is the database default and costs no statement; REPEATABLE_READ reads
    one snapshot for the whole transaction (an audit's several reads must agree)."""

    READ_COMMITTED = None
    REPEATABLE_READ = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"


@asynccontextmanager
async def transaction(
    pool: Pool, *, isolation: Isolation = Isolation.READ_COMMITTED
) -> AsyncIterator[AsyncConnection[Any]]:
    """A connection inside a transaction; committed when the block exits cleanly.

    The commit happens before this returns, so whatever the caller answers afterwards is
    durable. A commit that fails (connection lost) raises Unavailable: the outcome is then
    unknown to us, and the caller's retry with the same idempotency key settles it.
    """
    try:
        async with pool.connection() as conn:
            if isolation.value is not None:  # the transaction's first statement
                await conn.execute(isolation.value)
            yield conn
    except TooManyRequests as exc:
        raise Overloaded("too many calls waiting for a database connection; retry") from exc
    except PoolTimeout as exc:
        raise Unavailable("database unavailable: no connection within the pool timeout") from exc
    except PoolClosed as exc:
        raise ShuttingDown("service is shutting down") from exc
    except psycopg.errors.UniqueViolation as exc:
        raise KeyTaken(str(exc)) from exc
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
