"""The batch thread's own blocking connection: where every group-commit batch is written.

One psycopg `Connection` in autocommit mode, used only by the thread that applies the
group-commit batches: its waits are C-level polls that release the GIL, not event-loop
callbacks. A batch is one round trip when it can be: planned against the pools as the last
batch left them, assuming none of its keys exists, and written by one guarded statement
(contribution_store.contribute_in_one_statement). When the guard refuses (another writer
moved a pool, a key exists) or nothing is known yet, the batch is planned again against
the locked pools in two round trips (two_flights_sync.contribute_in_two_flights). Before
each batch the connection is checked without a round trip (database.has_input); one the
server closed is replaced first. One that dies during a batch fails that batch with
Unavailable (the callers retry with their idempotency keys) and is replaced on the next.

The COMMIT's answer is awaited at most JACKPOT_COMMIT_TIMEOUT (adapters.commit_bound): past
it a watchdog shuts the socket (never a cancel), the batch fails COMMIT_OUTCOME_UNKNOWN and
the next batch runs on a fresh connection, so one stuck commit never holds the thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from jackpot_grpc.adapters import contribution_store as store
from jackpot_grpc.adapters import two_flights_sync
from jackpot_grpc.adapters.commit_bound import (
    CONNECTION_LOST,
    SYNC_REP_CANCELLED,
    TIMEOUT,
    CommitWatchdog,
    commit_warnings,
    unknown,
)
from jackpot_grpc.adapters.database import batch_connection_kwargs, has_input
from jackpot_grpc.adapters.unit_of_work import translated
from jackpot_grpc.config import Settings
from jackpot_grpc.domain.errors import Unavailable
from jackpot_grpc.domain.model import Group, PoolState, ScopedKey

log = logging.getLogger(__name__)


class BatchConnection:
    def __init__(self, settings: Settings, database_url: str) -> None:
        self._url = database_url
        self._kwargs = batch_connection_kwargs(settings, database_url)
        self._conn: psycopg.Connection[Any] | None = None
        self._commit_timeout = settings.database.commit_timeout
        # The one statement runs inside its commit's bound. Its pool row locks are taken
        # NOWAIT, but its table locks (held by a migration, an index build) are waited
        # for: only a lock timeout shorter than the commit bound turns that wait into an
        # error (nothing written) before the bound could call a landing write unknown.
        lock = settings.database.lock_timeout
        self._one_statement_bounded = self._commit_timeout <= 0 or 0 < lock < self._commit_timeout
        self._watchdog = CommitWatchdog()
        # The pools as this connection's last batch left them (None: not known, or a batch
        # failed): what the next batch is planned against first.
        self._pools: dict[Group, PoolState] | None = None
        # Batches written in one statement, and why the others were not (guard's answer).
        self.one_statement = 0
        self.two_flights: dict[str, int] = {}

    def contribute(self, keys: Sequence[ScopedKey], plan: store.Planner) -> store.Recorded:
        """One batch in one transaction; returns after its COMMIT was answered. Database
        faults leave as the domain's errors (unit_of_work.translated); a COMMIT that is
        not answered in time, or answered with a synchronous-replication warning, as
        CommitOutcomeUnknown."""
        conn = self._connected()
        warnings = commit_warnings(conn)
        warnings.clear()
        sent = False

        def committing() -> None:
            nonlocal sent
            sent = True
            if self._commit_timeout > 0:
                self._watchdog.arm(conn.pgconn.socket, self._commit_timeout)

        def refused() -> None:
            """The one statement was answered and wrote nothing: the bound starts again
            with the two flights' commit (a sync-replication warning on the statement's
            empty commit concerns nothing written)."""
            nonlocal sent
            sent = False
            warnings.clear()
            if self._watchdog.disarm():  # fired just after the answer: the socket is shut
                raise Unavailable("batch connection closed by the commit bound; retry")

        try:
            recorded = self._write(conn, keys, plan, committing, refused)
        except Exception as exc:
            self._pools = None
            fired = self._watchdog.disarm()
            lost = conn.closed or conn.broken
            if fired or warnings or (sent and lost):
                self._drop()
                reason = TIMEOUT if fired else SYNC_REP_CANCELLED if warnings else CONNECTION_LOST
                raise unknown(reason, self._commit_timeout) from exc
            self._after_failure(conn)
            mapped = translated(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        fired = self._watchdog.disarm()
        if fired or warnings:
            self._drop()
            raise unknown(TIMEOUT if fired else SYNC_REP_CANCELLED, self._commit_timeout)
        if recorded[0]:
            self._pools = {p.group: p for p in recorded[0]}
        return recorded

    def _write(
        self,
        conn: psycopg.Connection[Any],
        keys: Sequence[ScopedKey],
        plan: store.Planner,
        committing: Callable[[], None],
        refused: Callable[[], None],
    ) -> store.Recorded:
        """One statement when the guard lets it, else the two flights."""
        why = "pools not known" if self._one_statement_bounded else "lock wait unbounded"
        if self._pools is not None and self._one_statement_bounded:
            written = store.contribute_in_one_statement(conn, self._pools, keys, plan, committing)
            if not isinstance(written, str):
                self.one_statement += 1
                return written
            why = written
            refused()
        self.two_flights[why] = self.two_flights.get(why, 0) + 1
        return two_flights_sync.contribute_in_two_flights(conn, keys, plan, committing=committing)

    def close(self) -> None:
        """The connection and the watchdog's thread: at the end of the batcher."""
        self._drop()
        self._watchdog.close()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connected(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not has_input(conn):
            return conn
        self._drop()  # closed, or the server's goodbye is waiting on the socket
        # A new connection may reach another database (a failover, a restore) whose pools
        # can stand at the same versions with other amounts: plan against what it says.
        self._pools = None
        try:
            self._conn = psycopg.connect(self._url, autocommit=True, **self._kwargs)
        except psycopg.Error as exc:
            raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc
        return self._conn

    def _after_failure(self, conn: psycopg.Connection[Any]) -> None:
        """Leave the connection idle for the next batch, or drop it."""
        if conn.closed or conn.broken:
            self._drop()
            return
        if conn.info.transaction_status != TransactionStatus.IDLE:
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                log.warning("batch connection lost while rolling back; reconnecting")
                self._drop()
