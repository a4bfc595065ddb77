"""Health and metrics over HTTP on HEALTH_PORT (3001): what operators and scrapers read.

    /health              overall status: 200 healthy; 503 unhealthy or shutting down
    /health/database     reachability, latency, connection pool figures (200/503)
    /health/jackpot      pools readable, amounts and versions, and the latest background
                         ledger audit with its age (200/503); `?audit=now` audits first.
                         A probe never scans the ledger unless asked to: the audit reads
                         every ledger row, and a load balancer probes every few seconds.
    /metrics             JSON summary, `?period=5m|1h|24h|30d` (default since start);
                         Prometheus text when the client asks for text/plain, not JSON.
                         A period this process has been up for is answered from memory
                         (`"source": "memory"`); a longer one from the metrics history in
                         the database, every process's rollups summed bucket by bucket
                         plus this process's unflushed minute (`"source": "database"`),
                         so `period=30d` survives restarts and adds up replicas.
                         `&source=database` asks for the history whatever the uptime (the
                         whole fleet's figures); `&source=memory` for this process only.
                         With the history unreadable, the answer falls back to memory
                         and says why in `history_error`.
    /metrics/prometheus  Prometheus text (OpenMetrics when asked for), for scrapers

The handlers only read: the probe's latest result, the pool's stats, the service's use
cases, the request metrics. Every database read has a short timeout, so a dead database
gives a quick 503 and never a hung health check or a 500.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jackpot_grpc.adapters.database import Pool
from jackpot_grpc.domain.model import LedgerAudit, PoolAudit, PoolState
from jackpot_grpc.entrypoints.health import DatabaseHealthProbe
from jackpot_grpc.metrics import PERIODS, RequestMetrics, UnknownPeriod
from jackpot_grpc.service.jackpot import JackpotService
from jackpot_grpc.service.reports import totals_report
from jackpot_grpc.version import package_version

T = TypeVar("T")

PING_TIMEOUT = 1.0  # a fresh database ping for /health/database
READ_TIMEOUT = 3.0  # pools for /health/jackpot
AUDIT_TIMEOUT = 10.0  # /health/jackpot?audit=now
SCRAPE_TIMEOUT = 1.0  # pool amounts read for a Prometheus scrape
POOL_SATURATED_PERCENT = 95.0  # the runbook's warning level for connection use
SOURCES = ("memory", "database")  # /metrics?source=


class MetricsHistory(Protocol):
    """The stored metrics history (jackpot_grpc.history.sampler.MetricsSampler)."""

    async def window_summary(self, period: str) -> dict[str, Any]: ...


class LedgerAuditor(Protocol):
    """The background audit (jackpot_grpc.entrypoints.audit_monitor.AuditMonitor)."""

    last: LedgerAudit | None
    last_at: float | None

    async def audit_now(self) -> LedgerAudit: ...


def _iso(value: datetime | float | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        value = datetime.fromtimestamp(value, UTC)
    return value.isoformat()


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _within(seconds: float, call: Callable[[], Awaitable[T]]) -> T:
    async with asyncio.timeout(seconds):
        return await call()


def pool_figures(pool: Pool) -> dict[str, Any]:
    """psycopg_pool's get_stats(), with sizes and the share of connections in use."""
    stats = pool.get_stats()
    size = stats.get("pool_size", 0)
    available = stats.get("pool_available", 0)
    waiting = stats.get("requests_waiting", 0)
    in_use = max(size - available, 0)
    utilisation = 100.0 * in_use / pool.max_size if pool.max_size else 0.0
    if waiting and in_use >= pool.max_size:
        status = "exhausted"
    elif utilisation >= POOL_SATURATED_PERCENT:
        status = "saturated"
    else:
        status = "ok"
    measures = {"pool_min", "pool_max", "pool_size", "pool_available", "requests_waiting"}
    return {
        "status": status,
        "min_size": pool.min_size,
        "max_size": pool.max_size,
        "pool_size": size,
        "pool_available": available,
        "in_use": in_use,
        "requests_waiting": waiting,
        "utilization_percent": round(utilisation, 1),
        "counters": {k: v for k, v in sorted(stats.items()) if k not in measures},
    }


def pool_state(pool: PoolState) -> dict[str, Any]:
    return {
        "group": pool.group.value,
        "current_amount": pool.current_amount,
        "seed_amount": pool.seed_amount,
        "max_amount": pool.max_amount,
        "contribution_rate": str(pool.contribution_rate),
        "total_contributions": pool.total_contributions,
        "total_wins": pool.total_wins,
        "contribution_count": pool.contribution_count,
        "win_count": pool.win_count,
        "last_won_amount": pool.last_won_amount,
        "last_won_at": _iso(pool.last_won_at),
        "updated_at": _iso(pool.updated_at),
        "version": pool.version,
    }


def pool_audit(audit: PoolAudit) -> dict[str, Any]:
    return {
        "group": audit.group.value,
        "balanced": audit.balanced,
        "current_amount": audit.current_amount,
        "expected_amount": audit.expected_amount,
        "discrepancy": audit.discrepancy,
        "seed_funding": audit.seed_funding,
        "contributions": audit.contributions,
        "wins": audit.wins,
        "recorded_total_contributions": audit.recorded_total_contributions,
        "recorded_total_wins": audit.recorded_total_wins,
        "recorded_total_seed_funding": audit.recorded_total_seed_funding,
    }


def wants_prometheus(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "").lower()
    textual = "text/plain" in accept or "application/openmetrics-text" in accept
    return textual and "application/json" not in accept


def _invalid(parameter: str, value: str, allowed: list[str], message: str) -> web.Response:
    return web.json_response(
        {
            "error": "invalid_parameter",
            "parameter": parameter,
            "value": value,
            "allowed": allowed,
            "message": message,
        },
        status=400,
    )


class ServiceCollector:
    """Database, connection pool and jackpot pool gauges, read when Prometheus scrapes."""

    def __init__(self, service: JackpotService, probe: DatabaseHealthProbe) -> None:
        self._service = service
        self._probe = probe
        self._pools: list[PoolState] = []

    async def refresh(self) -> None:
        """Read the pools before a scrape (collect() cannot await); none when unreadable."""
        try:
            self._pools = await _within(SCRAPE_TIMEOUT, self._service.pools)
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


class HealthHttp:
    """The aiohttp app for HEALTH_PORT, and its site: started and closed by the server."""

    def __init__(
        self,
        service: JackpotService,
        probe: DatabaseHealthProbe,
        metrics: RequestMetrics,
        *,
        probe_interval: float,
        registries: Sequence[Collector] = (),
        version: str | None = None,
        history: MetricsHistory | None = None,
        auditor: LedgerAuditor | None = None,
    ) -> None:
        self.service = service
        self.auditor = auditor
        self.probe = probe
        self.metrics = metrics
        self.history = history
        self.version = package_version() if version is None else version
        self.shutting_down = False
        self._probe_interval = probe_interval
        self._collector = ServiceCollector(service, probe)
        self.registry = CollectorRegistry()  # what /metrics/prometheus exposes
        collectors: list[Collector] = [metrics.registry, self._collector, *registries]
        for collector in collectors:
            self.registry.register(collector)
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/health/database", self.database)
        app.router.add_get("/health/jackpot", self.jackpot)
        app.router.add_get("/metrics", self.metrics_summary)
        app.router.add_get("/metrics/prometheus", self.prometheus)
        return app

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on host:port (0: any free port); returns the bound port."""
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host.strip("[]"), port, reuse_port=reuse_port or None)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound: int = runner.addresses[0][1]
        return bound

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- checks ------------------------------------------------------------------------

    def _probe_result(self) -> dict[str, Any]:
        probe = self.probe
        age = None if probe.last_checked is None else time.time() - probe.last_checked
        stale = age is None or age > max(5 * self._probe_interval, 5.0)
        up = probe.healthy is True and not stale
        latency = probe.last_latency_ms
        return {
            "status": "up" if up else "down",
            "latency_ms": None if latency is None else round(latency, 3),
            "error": "health probe has not run recently" if stale else probe.last_error,
            "last_checked": _iso(probe.last_checked),
            "age_seconds": None if age is None else round(age, 3),
            "source": "probe",
        }

    async def _database_result(self) -> dict[str, Any]:
        """The probe's result when it is recent, else a fresh ping with a short timeout."""
        result = self._probe_result()
        if result["age_seconds"] is not None and result["age_seconds"] <= 2 * self._probe_interval:
            return result
        started = time.perf_counter()
        try:
            await _within(PING_TIMEOUT, self.service.ping)
        except Exception as exc:
            return {**result, "status": "down", "error": _error(exc), "source": "ping"}
        latency = (time.perf_counter() - started) * 1000
        checked = _iso(time.time())
        return {
            "status": "up",
            "latency_ms": round(latency, 3),
            "error": None,
            "last_checked": checked,
            "age_seconds": 0.0,
            "source": "ping",
        }

    def _now(self) -> dict[str, Any]:
        return {
            "timestamp": _iso(time.time()),
            "uptime_seconds": round(self.metrics.uptime(), 3),
            "version": self.version,
        }

    # --- handlers ----------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        database = self._probe_result()
        pool = pool_figures(self.service.pool)
        if self.shutting_down:
            status = "shutting_down"
        else:
            status = "healthy" if database["status"] == "up" else "unhealthy"
        body = {
            "status": status,
            "checks": {
                "database": database,
                "connection_pool": {
                    k: pool[k]
                    for k in ("status", "pool_size", "in_use", "max_size", "utilization_percent")
                },
            },
            **self._now(),
        }
        return web.json_response(body, status=200 if status == "healthy" else 503)

    async def database(self, request: web.Request) -> web.Response:
        result = await self._database_result()
        reachable = result.pop("status") == "up"
        healthy = reachable and not self.shutting_down
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "reachable": reachable,
            **result,
            "pool": pool_figures(self.service.pool),
            **self._now(),
        }
        return web.json_response(body, status=200 if healthy else 503)

    async def jackpot(self, request: web.Request) -> web.Response:
        audit_now = request.query.get("audit") == "now"
        body: dict[str, Any] = {}
        try:
            pools = await _within(READ_TIMEOUT, self.service.pools)
        except Exception as exc:
            readable = False
            body.update(pools_readable=False, pools_error=_error(exc), pools=[])
            body["last_activity"] = None
        else:
            readable = True
            body.update(pools_readable=True, pools=[pool_state(p) for p in pools])
            times = [t for p in pools for t in (p.updated_at, p.last_won_at) if t is not None]
            body["last_activity"] = _iso(max(times)) if times else None
        ledger_ok, body["ledger"] = await self._ledger(audit_now)
        healthy = readable and ledger_ok and not self.shutting_down
        body = {"status": "healthy" if healthy else "unhealthy", **body, **self._now()}
        return web.json_response(body, status=200 if healthy else 503)

    async def _ledger(self, audit_now: bool) -> tuple[bool, dict[str, Any]]:
        """(healthy, report) of the books: the latest audit, or a new one if asked.

        Not audited yet (the first background run is under way) is not unhealthy; books
        that did not balance stay unhealthy until an audit finds them balanced.
        """
        if self.auditor is None:
            return True, {"checked": False, "balanced": None}
        if audit_now:
            try:
                await _within(AUDIT_TIMEOUT, self.auditor.audit_now)
            except Exception as exc:
                return False, {"checked": False, "balanced": None, "error": _error(exc)}
        books, at = self.auditor.last, self.auditor.last_at
        if books is None or at is None:
            return True, {"checked": False, "balanced": None}
        return books.balanced, {
            "checked": True,
            "balanced": books.balanced,
            "checked_at": _iso(at),
            "age_seconds": round(max(0.0, time.time() - at), 3),
            "problems": books.problems(),
            "discrepancies": [pool_audit(a) for a in books.pools if not a.balanced],
            "pools": [pool_audit(a) for a in books.pools],
            "contribution_totals": totals_report(books),
        }

    async def metrics_summary(self, request: web.Request) -> web.Response:
        if wants_prometheus(request):
            return await self.prometheus(request)
        period = request.query.get("period") or None
        source = request.query.get("source") or None
        if period is not None and period not in PERIODS:
            return _invalid("period", period, list(PERIODS), str(UnknownPeriod(period)))
        if source is not None and source not in SOURCES:
            message = f"unknown source {source!r}: use memory or database"
            return _invalid("source", source, list(SOURCES), message)
        if source == "database" and (period is None or self.history is None):
            message = (
                "source=database needs a period"
                if self.history is not None
                else "no metrics history in this process"
            )
            return _invalid("source", source, ["memory"], message)
        history = self.history
        stored = source == "database" or (
            source is None and period is not None and not self.metrics.covers(period)
        )
        if stored and period is not None and history is not None:
            try:
                return web.json_response(await history.window_summary(period))
            except Exception as exc:  # a dead database: this process's figures, and why
                summary = self.metrics.summary(period)
                summary["history_error"] = _error(exc)
                return web.json_response(summary)
        return web.json_response(self.metrics.summary(period))

    async def prometheus(self, request: web.Request) -> web.Response:
        await self._collector.refresh()
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": content_type})
