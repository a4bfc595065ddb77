"""The batch thread's own blocking connection (JACKPOT_BATCH_EXECUTOR=thread).

One psycopg `Connection` in autocommit mode, used only by the thread that applies the
group-commit batches: its waits are C-level polls that release the GIL, not event-loop
callbacks. A batch is two round trips (repository.contribute_in_two_flights_sync). Before
each batch the connection is checked without a round trip (database.has_input); one the
server closed is replaced first. One that dies during a batch fails that batch with
Unavailable (the callers retry with their idempotency keys) and is replaced on the next.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from jackpot_grpc.adapters import repository as repo
from jackpot_grpc.adapters.database import connection_kwargs, has_input
from jackpot_grpc.adapters.unit_of_work import translated
from jackpot_grpc.config import Settings
from jackpot_grpc.domain.errors import Unavailable
from jackpot_grpc.domain.model import ScopedKey

log = logging.getLogger(__name__)


class BatchConnection:
    def __init__(self, settings: Settings, database_url: str) -> None:
        self._url = database_url
        self._kwargs = connection_kwargs(settings, database_url)
        self._conn: psycopg.Connection[Any] | None = None

    def contribute(self, keys: Sequence[ScopedKey], plan: repo.Planner) -> repo.Recorded:
        """One batch in one transaction; returns after its COMMIT was answered. Database
        faults leave as the domain's errors (unit_of_work.translated)."""
        conn = self._connected()
        try:
            return repo.contribute_in_two_flights_sync(conn, keys, plan)
        except Exception as exc:
            self._after_failure(conn)
            mapped = translated(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connected(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not has_input(conn):
            return conn
        self.close()  # closed, or the server's goodbye is waiting on the socket
        try:
            self._conn = psycopg.connect(self._url, autocommit=True, **self._kwargs)
        except psycopg.Error as exc:
            raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc
        return self._conn

    def _after_failure(self, conn: psycopg.Connection[Any]) -> None:
        """Leave the connection idle for the next batch, or drop it."""
        if conn.closed or conn.broken:
            self.close()
            return
        if conn.info.transaction_status != TransactionStatus.IDLE:
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                log.warning("batch connection lost while rolling back; reconnecting")
                self.close()
