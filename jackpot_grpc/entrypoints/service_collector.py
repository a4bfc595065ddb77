"""Database, connection pool and jackpot pool gauges for /metrics/prometheus.

Read when Prometheus scrapes: the probe's last result, the pool's stats, and the pools as
the service reads them (with a short timeout, so a dead database never hangs a scrape).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from jackpot_grpc.domain.model import PoolState
from jackpot_grpc.entrypoints.database_health_probe import DatabaseHealthProbe
from jackpot_grpc.entrypoints.health_report import pool_figures
from jackpot_grpc.service.jackpot import JackpotService

SCRAPE_TIMEOUT = 1.0  # pool amounts read for a Prometheus scrape


class ServiceCollector:
    """Database, connection pool and jackpot pool gauges, read when Prometheus scrapes."""

    def __init__(self, service: JackpotService, probe: DatabaseHealthProbe) -> None:
        self._service = service
        self._probe = probe
        self._pools: list[PoolState] = []

    async def refresh(self) -> None:
        """Read the pools before a scrape (collect() cannot await); none when unreadable."""
        try:
            async with asyncio.timeout(SCRAPE_TIMEOUT):
                self._pools = await self._service.pools()
        except Exception:
            self._pools = []

    def collect(self) -> Iterable[Metric]:
        probe = self._probe
        yield GaugeMetricFamily(
            "jackpot_database_up",
            "1 while the database health probe answers, else 0.",
            value=1.0 if probe.healthy else 0.0,
        )
        if probe.last_latency_ms is not None:
            yield GaugeMetricFamily(
                "jackpot_database_ping_seconds",
                "Latency of the last successful database probe.",
                value=probe.last_latency_ms / 1000.0,
            )
        figures = pool_figures(self._service.pool)
        for key, help_text in (
            ("min_size", "Configured minimum connections."),
            ("max_size", "Configured maximum connections."),
            ("pool_size", "Connections open (in use or idle)."),
            ("pool_available", "Idle connections ready to hand out."),
            ("in_use", "Connections lent to a caller."),
            ("requests_waiting", "Callers queued for a connection."),
        ):
            name = "jackpot_db_pool_" + key.removeprefix("pool_")
            yield GaugeMetricFamily(name, help_text, value=figures[key])
        counters = figures["counters"]
        for key, name, help_text in (
            ("connections_errors", "connection_errors", "Failed connection attempts."),
            ("connections_lost", "connections_lost", "Connections found broken, discarded."),
            ("requests_errors", "request_errors", "Connection requests that failed."),
        ):
            yield CounterMetricFamily(
                f"jackpot_db_pool_{name}", help_text, value=counters.get(key, 0)
            )
        amount = GaugeMetricFamily(
            "jackpot_pool_current_amount_minor_units",
            "Current amount of each jackpot pool, in minor units (cents).",
            labels=["group"],
        )
        version = GaugeMetricFamily(
            "jackpot_pool_version", "Version of each jackpot pool row.", labels=["group"]
        )
        for pool in self._pools:
            amount.add_metric([pool.group.value], pool.current_amount)
            version.add_metric([pool.group.value], pool.version)
        yield amount
        yield version
