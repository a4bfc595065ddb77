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

Any WARNING that reaches a transaction (its statements or its COMMIT) turns that commit
into the same unknown outcome: see `commit_warnings`. The synchronous-replication warning
cannot be told apart more precisely: its text follows the server's lc_messages (German,
French, ... on a localized server), and PostgreSQL gives it no SQLSTATE of its own
(src/backend/replication/syncrep.c: the cancel's warning has the generic 01000, the
terminate's 57P01 ADMIN_SHUTDOWN). The severity is matched by its unlocalized field
(protocol field V); the service's own statements raise no warnings, so a false alarm costs a
keyed retry, never a wrong acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
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
from jackpot_grpc.runtime.thread_names import name_os_thread

log = logging.getLogger(__name__)

# Why a commit's outcome is unknown (the counter's label).
TIMEOUT, SYNC_REP_CANCELLED, CONNECTION_LOST = COMMIT_UNKNOWN_REASONS

# Severities that are not warnings, as PostgreSQL sends them unlocalized (field V). A
# server that sends no unlocalized severity (before 9.6) is judged by the localized one:
# whatever it is not one of these counts as a warning.
_NOT_WARNINGS = frozenset({"NOTICE", "INFO", "LOG", "DEBUG"})


def is_commit_warning(diag: Diagnostic) -> bool:
    """Whether a notice received during a transaction makes its commit's outcome unknown:
    any WARNING, whatever its text or language."""
    severity = diag.severity_nonlocalized
    if severity is not None:
        return severity.upper() == "WARNING"
    return (diag.severity or "").upper() not in _NOT_WARNINGS


_warnings: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()


def commit_warnings(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> list[str]:
    """The WARNINGs this connection received since the list was last cleared (a notice
    handler is added on first use: no round trip). Clear it before a transaction; anything
    in it after the COMMIT makes the outcome unknown (a cancelled synchronous-replication
    wait is one, in whatever language the server speaks)."""
    found = _warnings.get(conn)
    if found is None:
        found = _warnings[conn] = []

        def collect(diag: Diagnostic) -> None:
            if is_commit_warning(diag):
                log.error(
                    "warning from the database during a transaction (SQLSTATE %s): %s",
                    diag.sqlstate,
                    diag.message_primary,
                )
                found.append(diag.message_primary or f"WARNING {diag.sqlstate}")

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
        text = "the database warned during the commit (a cancelled synchronous-standby wait?)"
    else:
        text = "the connection was lost during the commit"
    log.error("commit outcome unknown (%s): %s", reason, text)
    return CommitOutcomeUnknown(
        f"{text}: its outcome is unknown; retry with the same idempotency key"
    )


class CommitWatchdog:
    """One thread that shuts a blocking connection's socket when its armed deadline
    passes (the batch thread's bound: psycopg's blocking waits take no deadline).

    Arming wakes the thread only when it would otherwise wake too late (it waits with no
    deadline, or past the new one): under load the thread wakes about once per bound, not
    once per batch, and each wake would take the GIL from the threads doing the work."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._fd = -1
        self._fired = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wakes_at = math.inf  # when the thread's wait ends by itself (inf: never)
        self.wakes = 0  # how often the thread woke (tests: arming does not wake it each time)

    def arm(self, fd: int, seconds: float) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="commit-watchdog", daemon=True
                )
                self._thread.start()
            self._fd, self._fired = fd, False
            self._deadline = time.monotonic() + seconds
            if self._deadline < self._wakes_at:
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
        name_os_thread("commit-watchdog")
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._wait(None)
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._wait(left)
                    continue
                # Under the lock: disarm() cannot return (and the owner close the fd)
                # while the socket is being shut.
                shut_socket(self._fd)
                self._fired, self._deadline = True, None

    def _wait(self, seconds: float | None) -> None:
        self._wakes_at = math.inf if seconds is None else time.monotonic() + seconds
        self._cond.wait(seconds)
        self.wakes += 1


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
    raised; any WARNING meanwhile (commit_warnings) raises it too, and so does the
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
