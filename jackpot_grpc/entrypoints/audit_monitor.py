"""Reconciles the books in the background and exports the result as metrics.

The same check as `jackpot audit` and /health/jackpot, run every JACKPOT_AUDIT_INTERVAL
seconds off the hot path, so an alert can fire on `jackpot_books_balanced == 0` without
anyone polling an endpoint. A failed run leaves the last result and counts the failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from jackpot_grpc.domain.model import PoolAudit
from jackpot_grpc.entrypoints.periodic import Periodic

log = logging.getLogger(__name__)


class AuditMonitor:
    def __init__(
        self,
        audit: Callable[[], Awaitable[list[PoolAudit]]],
        interval: float,
        timeout: float = 30.0,
    ) -> None:
        self._audit = audit
        self._timeout = timeout
        self._loop = Periodic("ledger-audit", self.run_once, interval)
        self.last: list[PoolAudit] | None = None
        self.last_at: float | None = None
        self.failures = 0

    async def run_once(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                audits = await self._audit()
        except Exception as exc:  # the database may be down: keep the last result
            self.failures += 1
            log.warning("ledger audit failed: %s: %s", type(exc).__name__, exc)
            return
        if not all(a.balanced for a in audits):
            log.error(
                "BOOKS DO NOT BALANCE: %s",
                ", ".join(
                    f"{a.group.value} off by {a.discrepancy}" for a in audits if not a.balanced
                ),
            )
        self.last, self.last_at = audits, time.time()

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
            "1 when every pool equals seed funding + contributions - wins, else 0.",
            value=1.0 if all(a.balanced for a in self.last) else 0.0,
        )
        yield GaugeMetricFamily(
            "jackpot_audit_timestamp_seconds",
            "When the last ledger audit ran (Unix time).",
            value=self.last_at,
        )
        discrepancy = GaugeMetricFamily(
            "jackpot_ledger_discrepancy",
            "current_amount minus what the ledger says, per pool (minor units; 0 is right).",
            labels=["group"],
        )
        for audit in self.last:
            discrepancy.add_metric([audit.group.value], audit.discrepancy)
        yield discrepancy
