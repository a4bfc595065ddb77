"""One transaction per use case: commit on success, roll back on any error.

Database faults become `Unavailable`, so no caller ever mistakes them for an answer; a
statement stopped by the lock or statement timeout becomes `LockTimeout` (retryable),
logged and counted (jackpot_db_timeouts_total). The isolation level is the caller's choice
of unit of work, never a statement it runs.

A validate-only unit of work (AIP-163's validate_only) runs exactly what the real one runs,
then, instead of COMMIT, runs the checks COMMIT would (deferred constraints) and rolls back.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg_pool import PoolClosed, PoolTimeout, TooManyRequests

from jackpot_grpc.adapters.commit_bound import bounded_commit
from jackpot_grpc.adapters.database import DbPool
from jackpot_grpc.domain.errors import (
    LockTimeout,
    OutOfRange,
    Overloaded,
    ShuttingDown,
    Unavailable,
)
from jackpot_grpc.observability.metrics import DATABASE_TIMEOUTS

log = logging.getLogger(__name__)


class KeyTaken(Exception):
    """An insert lost a race for an idempotency key (its unique index refused the row):
    the use case runs again and finds the winner's row."""


class Isolation(enum.Enum):
    """READ_COMMITTED is the database default and costs no statement; REPEATABLE_READ reads
    one snapshot for the whole transaction (an audit's several reads must agree)."""

    READ_COMMITTED = None
    REPEATABLE_READ = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"


# What COMMIT would check besides the statements themselves: the deferred constraints (the
# rates-sum trigger) fire now. A validate-only transaction runs it, then rolls back.
CHECK_DEFERRED = "SET CONSTRAINTS ALL IMMEDIATE"


@asynccontextmanager
async def transaction(
    db_pool: DbPool,
    *,
    isolation: Isolation = Isolation.READ_COMMITTED,
    validate_only: bool = False,
    commit_timeout: float = 0.0,
) -> AsyncIterator[AsyncConnection[Any]]:
    """A connection inside a transaction; committed when the block exits cleanly.

    The commit happens before this returns, so whatever the caller answers afterwards is
    durable. A commit that fails (connection lost) raises Unavailable: the outcome is then
    unknown to us, and the caller's retry with the same idempotency key settles it.
    With `validate_only`, a clean exit checks the deferred constraints and rolls back:
    nothing the block wrote remains. A COMMIT unanswered after `commit_timeout` seconds
    (0: no bound), or answered with a synchronous-replication warning, raises
    CommitOutcomeUnknown (adapters.commit_bound): never acknowledged.
    """
    try:
        async with db_pool.connection() as conn, bounded_commit(conn, commit_timeout) as committing:
            if isolation.value is not None:  # the transaction's first statement
                await conn.execute(isolation.value)
            yield conn
            if validate_only:
                await conn.execute(CHECK_DEFERRED)
                await conn.rollback()
            else:
                committing()
                await conn.commit()
    except Exception as exc:
        mapped = translated(exc)
        if mapped is exc:
            raise
        raise mapped from exc


@asynccontextmanager
async def pipelined_transaction(db_pool: DbPool) -> AsyncIterator[AsyncConnection[Any]]:
    """A pool connection in autocommit mode for a caller that sends BEGIN and COMMIT itself,
    each in a pipeline flight with its statements (no round trip of their own). Whatever
    the caller left open is rolled back; the connection goes back as it came."""
    try:
        async with db_pool.connection() as conn:
            await conn.set_autocommit(True)
            try:
                yield conn
            finally:
                await _back_to_transactions(conn)
    except Exception as exc:
        mapped = translated(exc)
        if mapped is exc:
            raise
        raise mapped from exc


async def _back_to_transactions(conn: AsyncConnection[Any]) -> None:
    """Roll back what the caller left open and leave autocommit; a connection that cannot
    be put back so (a statement still running after a cancellation, a lost server) is
    closed, so the pool replaces it instead of handing out an autocommit connection."""
    try:
        if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            await conn.execute("ROLLBACK")
        if conn.info.transaction_status == TransactionStatus.IDLE:
            await conn.set_autocommit(False)
            return
    except psycopg.Error:
        pass
    await conn.close()


def translated(exc: Exception) -> Exception:
    """The domain's error for a database or pool fault (`exc` itself when it is none)."""
    if isinstance(exc, TooManyRequests):
        return Overloaded(
            "too many calls waiting for a database connection; retry",
            queue=Overloaded.DATABASE_POOL,
        )
    if isinstance(exc, PoolTimeout):
        return Unavailable("database unavailable: no connection within the pool timeout")
    if isinstance(exc, PoolClosed):
        return ShuttingDown("service is shutting down")
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return KeyTaken(str(exc))
    if isinstance(exc, (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)):
        kind = "lock" if isinstance(exc, psycopg.errors.LockNotAvailable) else "statement"
        DATABASE_TIMEOUTS.labels(kind).inc()
        log.warning("database %s timeout (SQLSTATE %s): %s", kind, exc.sqlstate, exc)
        return LockTimeout(
            f"database {kind} timeout: the call could not get its locks in time; retry"
        )
    if isinstance(exc, psycopg.errors.NumericValueOutOfRange):
        return OutOfRange("an amount would exceed the ledger's int64 range")
    if isinstance(exc, psycopg.OperationalError):
        return Unavailable(f"database unavailable: {type(exc).__name__}")
    return exc
