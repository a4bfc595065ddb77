"""A COMMIT that does not return is never acknowledged (JACKPOT_COMMIT_TIMEOUT).

PostgreSQL's COMMIT may wait for a synchronous standby (`IPC/SyncRep`) for as long as none
answers, and neither statement_timeout nor lock_timeout applies to that wait. Cancelling
it (pg_cancel_backend, or psycopg's cancel when an awaiting task is cancelled) makes the
server report the COMMIT as successful with only a WARNING ("canceling wait for
synchronous replication"): the transaction is committed locally, perhaps never
replicated. So the bound here never cancels. When it fires, the connection's socket is
shut down from outside (the watchdog thread, or the event loop's timer): the waiting
client sees the connection end, the connection is thrown away, and the batch's callers are
told COMMIT_OUTCOME_UNKNOWN (retry with the same idempotency key: it replays the row if
the commit landed, applies it once if it did not).

A WARNING about the synchronous-replication wait that reaches a commit by any road (a
cancel, a terminate, a failover manager's intervention) turns that commit into the same
unknown outcome: see `commit_warnings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
from psycopg.errors import Diagnostic

from jackpot_grpc.domain.errors import CommitOutcomeUnknown
from jackpot_grpc.observability.metrics import COMMIT_OUTCOME_UNKNOWN, COMMIT_UNKNOWN_REASONS

log = logging.getLogger(__name__)

# What PostgreSQL says when a synchronous-commit wait ends without the standby's answer
# (src/backend/replication/syncrep.c): "canceling wait for synchronous replication due to
# user request", "canceling the wait for synchronous replication and terminating
# connection due to administrator command"; both with the detail "The transaction has
# already committed locally, but might not have been replicated to the standby."
SYNC_REP_WORDS = ("synchronous replication", "committed locally")

# Why a commit's outcome is unknown (the counter's label).
TIMEOUT, SYNC_REP_CANCELLED, CONNECTION_LOST = COMMIT_UNKNOWN_REASONS


def is_sync_rep_warning(diag: Diagnostic) -> bool:
    severity = diag.severity_nonlocalized or diag.severity or ""
    if severity.upper() != "WARNING":
        return False
    text = f"{diag.message_primary or ''} {diag.message_detail or ''}".lower()
    return any(word in text for word in SYNC_REP_WORDS)


_warnings: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()


def commit_warnings(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> list[str]:
    """The synchronous-replication warnings this connection received since the list was
    last cleared (a notice handler is added on first use: no round trip). Clear it before
    a transaction; anything in it after the COMMIT makes the outcome unknown."""
    found = _warnings.get(conn)
    if found is None:
        found = _warnings[conn] = []

        def collect(diag: Diagnostic) -> None:
            if is_sync_rep_warning(diag):
                log.error("commit warning from the database: %s", diag.message_primary)
                found.append(diag.message_primary or "synchronous replication wait cancelled")

        conn.add_notice_handler(collect)
    return found


def shut_socket(fd: int) -> None:
    """Shut a connection's socket down from outside its owner (another thread, or a
    timer on the loop): whoever waits on it wakes to end-of-file at once. No cancel
    request is sent; the server sees its client go away."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


def unknown(reason: str, seconds: float | None = None) -> CommitOutcomeUnknown:
    COMMIT_OUTCOME_UNKNOWN.labels(reason).inc()
    if reason == TIMEOUT:
        text = f"the database did not answer the commit within {seconds:g} s"
    elif reason == SYNC_REP_CANCELLED:
        text = "the commit's wait for a synchronous standby was cancelled"
    else:
        text = "the connection was lost during the commit"
    log.error("commit outcome unknown (%s): %s", reason, text)
    return CommitOutcomeUnknown(
        f"{text}: its outcome is unknown; retry with the same idempotency key"
    )


class CommitWatchdog:
    """One thread that shuts a blocking connection's socket when its armed deadline
    passes (the batch thread's bound: psycopg's blocking waits take no deadline)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._fd = -1
        self._fired = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def arm(self, fd: int, seconds: float) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="commit-watchdog", daemon=True
                )
                self._thread.start()
            self._fd, self._fired = fd, False
            self._deadline = time.monotonic() + seconds
            self._cond.notify()

    def disarm(self) -> bool:
        """Stop watching; whether the bound fired (the connection is then dead)."""
        with self._cond:
            self._deadline = None
            fired, self._fired = self._fired, False
            return fired

    def close(self) -> None:
        with self._cond:
            self._closed, self._deadline = True, None
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                # Under the lock: disarm() cannot return (and the owner close the fd)
                # while the socket is being shut.
                shut_socket(self._fd)
                self._fired, self._deadline = True, None


class _Armed:
    """The bound's start: called when the COMMIT is sent (the statements before it have
    their own timeouts)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], seconds: float) -> None:
        self._conn = conn
        self._seconds = seconds
        self._timer: asyncio.TimerHandle | None = None
        self.fired = False
        self.started = False

    def __call__(self) -> None:
        self.started = True
        if self._seconds > 0 and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._seconds, self._fire)

    def _fire(self) -> None:
        self.fired = True
        with contextlib.suppress(psycopg.Error):
            shut_socket(self._conn.pgconn.socket)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


@contextlib.asynccontextmanager
async def bounded_commit(
    conn: psycopg.AsyncConnection[Any], seconds: float
) -> AsyncIterator[Callable[[], None]]:
    """Around a transaction on the event loop; call what it yields as the COMMIT is sent.
    Past `seconds` from then the socket is shut (never a cancel) and CommitOutcomeUnknown
    raised; a synchronous-replication warning meanwhile raises it too, and so does the
    connection ending after the COMMIT was sent. `seconds` <= 0: no bound."""
    warnings = commit_warnings(conn)
    warnings.clear()
    armed = _Armed(conn, seconds)
    try:
        yield armed
    except psycopg.OperationalError as exc:
        if armed.fired:
            raise unknown(TIMEOUT, seconds) from exc
        if warnings:
            raise unknown(SYNC_REP_CANCELLED) from exc
        if armed.started and conn.broken:
            raise unknown(CONNECTION_LOST) from exc
        raise
    finally:
        armed.cancel()
    if armed.fired:
        await conn.close()
        raise unknown(TIMEOUT, seconds)
    if warnings:
        await conn.close()
        raise unknown(SYNC_REP_CANCELLED)
