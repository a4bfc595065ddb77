"""Reconciles the books in the background and exports the result as metrics.

The same check as `jackpot audit`, run every JACKPOT_AUDIT_INTERVAL seconds off the hot
path, so an alert can fire on `jackpot_books_balanced == 0` without anyone polling an
endpoint, and /health/jackpot reports the latest result instead of scanning the whole
ledger on every probe. A failed run leaves the last result and counts the failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from jackpot_grpc.domain.model import LedgerAudit
from jackpot_grpc.entrypoints.periodic import Periodic

log = logging.getLogger(__name__)


class AuditMonitor:
    def __init__(
        self,
        audit: Callable[[], Awaitable[LedgerAudit]],
        interval: float,
        timeout: float = 30.0,
    ) -> None:
        self._audit = audit
        self._timeout = timeout
        self._loop = Periodic("ledger-audit", self.run_once, interval)
        self.last: LedgerAudit | None = None
        self.last_at: float | None = None
        self.failures = 0

    async def audit_now(self) -> LedgerAudit:
        """Audit now and keep the result as the latest; raises if the audit cannot run."""
        async with asyncio.timeout(self._timeout):
            books = await self._audit()
        if not books.balanced:
            log.error("BOOKS DO NOT BALANCE: %s", ", ".join(books.problems()))
        self.last, self.last_at = books, time.time()
        return books

    async def run_once(self) -> None:
        try:
            await self.audit_now()
        except Exception as exc:  # the database may be down: keep the last result
            self.failures += 1
            log.warning("ledger audit failed: %s: %s", type(exc).__name__, exc)

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
            "When the last ledger audit ran (Unix time).",
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
