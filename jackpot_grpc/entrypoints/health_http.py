"""Health and metrics over HTTP on HEALTH_PORT (3001): what operators and scrapers read.
(One module for the port's routes: long because each answer's status rules are spelled out.)

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

Nothing here can make the service do unbounded work or take a connection calls need
(docs/RELIABILITY.md): load balancers keep `/health*` without credentials, so a fresh
ping uses the probe's own connection, `?audit=now` and history reads are shared and run
at most once per JACKPOT_ON_DEMAND_INTERVAL on the small on-demand pool, and no request
may carry a body (413 from its headers, 415 for any Content-Encoding: nothing is inflated).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from jackpot_grpc.domain.model import LedgerAudit
from jackpot_grpc.entrypoints.core_calls import CallIntake
from jackpot_grpc.entrypoints.database_health_probe import DatabaseHealthProbe
from jackpot_grpc.entrypoints.health_report import connection_pool_figures, pool_audit, pool_state
from jackpot_grpc.entrypoints.pacer import Pacer
from jackpot_grpc.entrypoints.service_collector import ServiceCollector
from jackpot_grpc.jobs.failover_watch import FailoverWatch
from jackpot_grpc.jobs.on_demand import OnDemand, Outcome
from jackpot_grpc.observability.metrics import PERIODS, RequestMetrics, UnknownPeriod
from jackpot_grpc.observability.refusals import Refusals
from jackpot_grpc.runtime.version import package_version
from jackpot_grpc.service.jackpot import JackpotService
from jackpot_grpc.service.reports import totals_report
from jackpot_grpc.text.report_values import error_text, iso_time
from jackpot_grpc.transport.http_site import HttpLimits, body_guard, close_if_unread, start_site

T = TypeVar("T")

PING_TIMEOUT = 1.0  # a fresh database ping for /health/database
READ_TIMEOUT = 3.0  # pools for /health/jackpot
AUDIT_TIMEOUT = 10.0  # /health/jackpot?audit=now
SOURCES = ("memory", "database")  # /metrics?source=
# Requests a second each class of endpoint serves (excess requests wait, see pacer):
# load balancers' /health probes, and everything else (detail, audits, metrics).
PROBE_RATE, DETAIL_RATE = 200.0, 20.0
MAX_WAIT = 10.0  # a request that would wait longer for its turn is refused 503


async def _within(seconds: float, call: Callable[[], Awaitable[T]]) -> T:
    async with asyncio.timeout(seconds):
        return await call()


class MetricsHistory(Protocol):
    """The stored metrics history (jackpot_grpc.history.sampler.MetricsSampler)."""

    async def window_summary(self, period: str) -> dict[str, Any]: ...


class LedgerAuditor(Protocol):
    """The background audit (jackpot_grpc.jobs.audit_monitor.AuditMonitor)."""

    last: LedgerAudit | None
    last_at: float | None
    last_by: str | None

    async def audit_now(self) -> Outcome[LedgerAudit]: ...


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


# What /health says of the books (the whole report is /health/jackpot's).
LEDGER_VERDICT = ("checked", "balanced", "checked_at", "age_seconds", "audited_by", "problems")


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
        ping: Callable[[], Awaitable[None]] | None = None,
        refusals: Refusals | None = None,
        intake: CallIntake | None = None,
        limits: HttpLimits | None = None,
        on_demand_interval: float = 10.0,
        clients: Callable[[], dict[str, Any]] | None = None,
        checkpoint: Callable[[], str | None] | None = None,
        failover: FailoverWatch | None = None,
    ) -> None:
        self.service = service
        self._failover = failover  # the database's identity, and what a failover lost
        self._checkpoint = checkpoint  # the newest signed ledger checkpoint, when signing
        self._clients = clients  # the clients file's state, when the server has one
        self.auditor = auditor
        self.probe = probe
        self.metrics = metrics
        self.history = history
        self.version = package_version() if version is None else version
        self.shutting_down = False
        self._probe_interval = probe_interval
        self.refusals = Refusals() if refusals is None else refusals
        self._intake = intake
        self._limits = limits
        # A fresh ping (the probe's result is stale) is shared by whoever asks meanwhile.
        self._fresh_ping = OnDemand(service.ping if ping is None else ping, probe_interval)
        self._on_demand_interval = on_demand_interval
        self._history_reads: dict[str, OnDemand[dict[str, Any]]] = {}  # by period
        self._probe_pacer = Pacer(PROBE_RATE, burst=50, max_wait=MAX_WAIT)
        self._detail_pacer = Pacer(DETAIL_RATE, burst=10, max_wait=MAX_WAIT)
        self._collector = ServiceCollector(service, probe)
        self.registry = CollectorRegistry()  # what /metrics/prometheus exposes
        collectors: list[Collector] = [
            metrics.registry,
            self._collector,
            self.refusals.registry,
            *registries,
        ]
        for collector in collectors:
            self.registry.register(collector)
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        no_body = body_guard(lambda request: 0, self.refusals)
        app = web.Application(middlewares=[close_if_unread, no_body, self._paced])
        app.router.add_get("/health", self.health)
        app.router.add_get("/health/database", self.database)
        app.router.add_get("/health/jackpot", self.jackpot)
        app.router.add_get("/metrics", self.metrics_summary)
        app.router.add_get("/metrics/prometheus", self.prometheus)
        app.router.add_get("/ledger/checkpoint", self.ledger_checkpoint)
        return app

    async def ledger_checkpoint(self, request: web.Request) -> web.Response:
        """The newest signed checkpoint (C2SP signed note, text/plain); 404 without one."""
        note = self._checkpoint() if self._checkpoint is not None else None
        if note is None:
            return web.json_response({"error": "no_checkpoint"}, status=404)
        return web.Response(text=note, content_type="text/plain")

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on host:port (0: any free port); returns the bound port."""
        self._runner, bound = await start_site(
            self.app(),
            host,
            port,
            shutdown_timeout=1.0,
            limits=self._limits,
            refusals=self.refusals,
            reuse_port=reuse_port,
            access_log=False,
        )
        return bound

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _paced(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        pacer = self._probe_pacer if request.path == "/health" else self._detail_pacer
        if not await pacer.turn():
            self.refusals.count("http", "paced_out")
            raise web.HTTPServiceUnavailable(
                text="too many requests to the health port; retry later",
                headers={"Retry-After": "1"},
            )
        return await handler(request)

    # --- checks ------------------------------------------------------------------------

    def _probe_result(self) -> dict[str, Any]:
        probe = self.probe
        age = None if probe.last_checked is None else time.time() - probe.last_checked
        stale = age is None or age > max(5 * self._probe_interval, 5.0)
        up = probe.healthy is True and not stale
        latency = probe.last_latency_ms
        wrote = probe.last_write_ok
        return {
            "status": "up" if up else "down",
            "latency_ms": None if latency is None else round(latency, 3),
            "error": "health probe has not run recently" if stale else probe.last_error,
            "last_checked": iso_time(probe.last_checked),
            "age_seconds": None if age is None else round(age, 3),
            "source": "probe",
            # Readiness covers writes: the last commit (a call's or the probe's heartbeat),
            # and a contribution batch in flight past JACKPOT_BATCH_AGE_LIMIT, if any.
            "last_write_age_seconds": None if wrote is None else round(time.monotonic() - wrote, 3),
            "stuck_batch_seconds": None
            if probe.stuck_batch_seconds is None
            else round(probe.stuck_batch_seconds, 3),
        }

    async def _database_result(self) -> dict[str, Any]:
        """The probe's result when it is recent, else a fresh ping with a short timeout."""
        result = self._probe_result()
        if result["age_seconds"] is not None and result["age_seconds"] <= 2 * self._probe_interval:
            return result
        started = time.perf_counter()
        try:
            await _within(PING_TIMEOUT, self._fresh_ping.get)
        except Exception as exc:
            return {**result, "status": "down", "error": error_text(exc), "source": "ping"}
        latency = (time.perf_counter() - started) * 1000
        checked = iso_time(time.time())
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
            "timestamp": iso_time(time.time()),
            "uptime_seconds": round(self.metrics.uptime(), 3),
            "version": self.version,
        }

    # --- handlers ----------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        database = self._probe_result()
        connections = connection_pool_figures(self.service.db_pool)
        # The latest audit's verdict (never a new audit here): books that do not balance
        # make the service unhealthy for operators; not audited yet does not.
        books_ok, ledger = await self._ledger(audit_now=False)
        failover = self._failover
        # Checkpointed leaves the database lost (an asynchronous failover): the books are
        # broken although they balance; unhealthy like unbalanced books.
        intact = failover is None or not failover.lost
        if self.shutting_down:
            status = "shutting_down"
        else:
            healthy = database["status"] == "up" and books_ok and intact
            status = "healthy" if healthy else "unhealthy"
        body = {
            "status": status,
            "checks": {
                "database": database,
                "connection_pool": {
                    k: connections[k]
                    for k in ("status", "pool_size", "in_use", "max_size", "utilization_percent")
                },
                "ledger": {k: ledger[k] for k in LEDGER_VERDICT if k in ledger},
                **({"failover": failover.report()} if failover is not None else {}),
                # Shown, not judged: the server serves its valid clients whatever this says.
                **({"clients_file": self._clients()} if self._clients is not None else {}),
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
            "pool": connection_pool_figures(self.service.db_pool),
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
            body.update(pools_readable=False, pools_error=error_text(exc), pools=[])
            body["last_activity"] = None
        else:
            readable = True
            body.update(pools_readable=True, pools=[pool_state(p) for p in pools])
            times = [t for p in pools for t in (p.updated_at, p.last_won_at) if t is not None]
            body["last_activity"] = iso_time(max(times)) if times else None
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
        asked: dict[str, Any] = {}
        if audit_now:
            try:
                outcome = await _within(AUDIT_TIMEOUT, self.auditor.audit_now)
            except Exception as exc:
                return False, {"checked": False, "balanced": None, "error": error_text(exc)}
            # "ran": this request's audit; "shared": one already running; "recent": one
            # ran within JACKPOT_ON_DEMAND_INTERVAL (its age is age_seconds).
            asked = {"audit_now": outcome.how}
        books, at = self.auditor.last, self.auditor.last_at
        if books is None or at is None:
            return True, {"checked": False, "balanced": None, **asked}
        return books.balanced, {
            **asked,
            "checked": True,
            "balanced": books.balanced,
            "checked_at": iso_time(at),
            "age_seconds": round(max(0.0, time.time() - at), 3),
            "audited_by": self.auditor.last_by,  # replicas take turns (shared_audit)
            "problems": books.problems(),
            "discrepancies": [pool_audit(a) for a in books.pools if not a.balanced],
            "pools": [pool_audit(a) for a in books.pools],
            "contribution_totals": totals_report(books),
            # Incremental: the first leaf index this audit re-proved (None: every row).
            "rows_from": books.rows_from,
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
            read = self._history_reads.get(period)
            if read is None:
                read = self._history_reads[period] = OnDemand(
                    lambda: history.window_summary(period), self._on_demand_interval
                )
            try:
                return web.json_response((await read.get()).value)
            except Exception as exc:  # a dead database: this process's figures, and why
                summary = self.metrics.summary(period)
                summary["history_error"] = error_text(exc)
                return web.json_response(summary)
        return web.json_response({**self.metrics.summary(period), "refusals": self._refusals()})

    def _refusals(self) -> dict[str, dict[str, int]]:
        """Ours by layer and reason, and what gRPC core received that we never took."""
        summary = self.refusals.summary()
        not_taken = self._intake.not_taken() if self._intake is not None else None
        if not_taken:
            summary["grpc_core"] = {"not_taken": not_taken}
        return summary

    async def prometheus(self, request: web.Request) -> web.Response:
        await self._collector.refresh()
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": content_type})
