"""The background ledger audit, shared by every replica on one database.

A full-ledger audit costs a scan of the ledger; N replicas each auditing every interval
would cost N scans. Each tick, in one REPEATABLE READ transaction (one snapshot for the
audit's reads), a replica

- takes the audit lock (`pg_try_advisory_xact_lock`, released by the commit); if another
  replica holds it (its audit is running), it reports the newest recorded result instead;
- reports the newest recorded result if some replica recorded one since this replica's
  previous tick (on the database clock; on the first tick: within the last interval);
- otherwise audits and records the result.

So with replicas ticking at the same interval, one audit per interval runs across all of
them, and each reports the latest verdict with its time and who ran it. A single server
always audits (nobody else records). `audit_now` (an operator asked) always audits, in full.

Incremental: a replica keeps, in memory, where its last clean audit left the books
(domain.model.AuditBase) and its next periodic audit reads and re-proves only the rows
written since (their leaf index at or above the base's head), from that base's amounts
and sums: its cost grows with the rows since, not with the ledger. Every `full_every`-th
audit of a replica (the first, after a failure, and audit_now too) re-proves every row,
which is what finds an edit of a row the base had already proved.
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from jackpot_grpc.adapters import audit_store, books_audit
from jackpot_grpc.adapters.audit_store import RecordedAudit
from jackpot_grpc.adapters.database import DbPool
from jackpot_grpc.adapters.pool_store import Conn
from jackpot_grpc.adapters.unit_of_work import Isolation, transaction
from jackpot_grpc.domain.model import AuditBase


@dataclass(frozen=True)
class AuditTick:
    """What one tick reported: the latest audit (None: none recorded yet, another replica
    is running the first), and whether this replica ran it."""

    audit: RecordedAudit | None
    ran_here: bool


class SharedAudit:
    def __init__(
        self,
        db_pool: DbPool,
        interval: float,
        *,
        host: str | None = None,
        pid: int | None = None,
        full_every: int = 12,
    ) -> None:
        self.db_pool = db_pool
        self.full_every = max(1, full_every)
        self._base: AuditBase | None = None  # where this process's last clean audit ended
        self._since_full = 0  # incremental audits since the last full one
        self.interval = timedelta(seconds=interval)
        self.host = socket.gethostname() if host is None else host
        self.pid = os.getpid() if pid is None else pid
        self._previous_tick: datetime | None = None  # database clock
        self._one_tick = asyncio.Lock()  # this process's ticks, one after the other

    async def tick(self) -> AuditTick:
        """The periodic audit: run it if it is this replica's turn, else report the latest."""
        async with self._one_tick:
            return await self._tick()

    async def _tick(self) -> AuditTick:
        async with transaction(self.db_pool, isolation=Isolation.REPEATABLE_READ) as conn:
            now = await audit_store.database_now(conn)
            since = self._previous_tick or now - self.interval
            self._previous_tick = now
            if not await audit_store.try_lock(conn):  # another replica is auditing now
                return AuditTick(await audit_store.latest(conn), ran_here=False)
            newest = await audit_store.latest(conn)
            if newest is not None and newest.audited_at > since:
                return AuditTick(newest, ran_here=False)
            return AuditTick(await self._audit(conn, full=False), ran_here=True)

    async def audit_now(self) -> RecordedAudit:
        """Audit now, every row, whatever was recorded, and record the result."""
        async with transaction(self.db_pool, isolation=Isolation.REPEATABLE_READ) as conn:
            return await self._audit(conn, full=True)

    async def _audit(self, conn: Conn, *, full: bool) -> RecordedAudit:
        full = full or self._base is None or self._since_full + 1 >= self.full_every
        base = None if full else self._base
        self._base = None  # until this audit is known clean
        books, self._base = await books_audit.audit_ledger_from(conn, base)
        self._since_full = 0 if full else self._since_full + 1
        return await audit_store.record(conn, books, self.host, self.pid)
