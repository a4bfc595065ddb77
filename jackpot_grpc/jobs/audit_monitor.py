"""Reconciles the books in the background and exports the result as metrics.

The same check as `jackpot audit`, run every JACKPOT_AUDIT_INTERVAL seconds off the hot
path, so an alert can fire on `jackpot_books_balanced == 0` without anyone polling an
endpoint, and /health/jackpot reports the latest result instead of scanning the whole
ledger on every probe. A failed run leaves the last result and counts the failure.
It runs on the server's side pool (never the connections Contribute needs).

With several replicas on one database, one audit per interval runs across all of them
(jackpot_grpc.service.shared_audit): a replica whose turn it is not reports the newest
recorded result, with the time it was audited (its age) and which process ran it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from jackpot_grpc.adapters.audit_store import RecordedAudit
from jackpot_grpc.domain.model import LedgerAudit
from jackpot_grpc.jobs.on_demand import OnDemand, Outcome
from jackpot_grpc.jobs.periodic import Periodic
from jackpot_grpc.service.shared_audit import AuditTick

log = logging.getLogger(__name__)


class Audits(Protocol):
    """The shared audit (jackpot_grpc.service.shared_audit.SharedAudit)."""

    async def tick(self) -> AuditTick: ...

    async def audit_now(self) -> RecordedAudit: ...


class AuditMonitor:
    def __init__(
        self, audits: Audits, interval: float, timeout: float = 30.0, min_interval: float = 10.0
    ) -> None:
        self._audits = audits
        self._timeout = timeout
        # On-demand audits (?audit=now) are shared by concurrent callers, at most one a
        # min_interval: nobody on the health port can make the service audit in a loop.
        self._on_demand = OnDemand(self._run_now, min_interval)
        self._loop = Periodic("ledger-audit", self.run_once, interval)
        self.last: LedgerAudit | None = None
        self.last_at: float | None = None  # when it was audited (Unix time)
        self.last_by: str | None = None  # which process audited it
        self.failures = 0
        self.runs = 0  # audits this process ran
        self.adopted = 0  # ticks that reported another replica's audit

    def _keep(self, audit: RecordedAudit) -> LedgerAudit:
        """Report `audit` unless a newer one is reported already: a periodic audit that
        began before an on-demand one may finish after it, and its older snapshot must not
        replace the newer verdict (books edited in between would read balanced again)."""
        if (
            self.last is not None
            and self.last_at is not None
            and audit.audited_at.timestamp() < self.last_at
        ):
            return self.last
        books = audit.books
        if not books.balanced and audit.audited_at.timestamp() != self.last_at:
            log.error(
                "BOOKS DO NOT BALANCE (audited by %s): %s",
                audit.audited_by,
                ", ".join(books.problems()),
            )
        self.last, self.last_at = books, audit.audited_at.timestamp()
        self.last_by = audit.audited_by
        return books

    async def audit_now(self) -> Outcome[LedgerAudit]:
        """The latest audit, run now unless one is running or ran within the minimum
        interval; raises if the audit cannot run."""
        return await self._on_demand.get()

    async def _run_now(self) -> LedgerAudit:
        async with asyncio.timeout(self._timeout):
            audit = await self._audits.audit_now()
        self.runs += 1
        return self._keep(audit)

    async def run_once(self) -> None:
        """One periodic tick: audit if it is this replica's turn, else adopt the latest."""
        try:
            async with asyncio.timeout(self._timeout):
                tick = await self._audits.tick()
        except Exception as exc:  # the database may be down: keep the last result
            self.failures += 1
            log.warning("ledger audit failed: %s: %s", type(exc).__name__, exc)
            return
        if tick.ran_here:
            self.runs += 1
        elif tick.audit is not None:
            self.adopted += 1
        if tick.audit is not None:
            self._keep(tick.audit)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "jackpot_audit_failures",
            "Background ledger audits that could not run.",
            value=self.failures,
        )
        yield CounterMetricFamily(
            "jackpot_audit_runs",
            "Background ledger audits this process ran (replicas take turns).",
            value=self.runs,
        )
        yield CounterMetricFamily(
            "jackpot_audit_adopted",
            "Background audit ticks that reported another replica's recorded audit.",
            value=self.adopted,
        )
        if self.last is None or self.last_at is None:
            return
        yield GaugeMetricFamily(
            "jackpot_books_balanced",
            "1 when every pool equals seed funding + contributions - wins and every running"
            " total equals its ledger sum, else 0.",
            value=1.0 if self.last.balanced else 0.0,
        )
        yield GaugeMetricFamily(
            "jackpot_audit_timestamp_seconds",
            "When the latest ledger audit ran, on whichever replica ran it (Unix time).",
            value=self.last_at,
        )
        discrepancy = GaugeMetricFamily(
            "jackpot_ledger_discrepancy_minor_units",
            "current_amount minus what the ledger says, per pool (minor units; 0 is right).",
            labels=["group"],
        )
        for audit in self.last.pools:
            discrepancy.add_metric([audit.group.value], audit.discrepancy)
        yield discrepancy
