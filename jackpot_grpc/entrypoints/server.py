"""Server wiring: build the pieces (no I/O), start them, and stop them in the right order.

Over 400 lines because the build (build_server), the start order (start_parts) and the stop
(its exit stack, unwound) are one sequence over the same parts: kept in one module, the
order a part is started in can be read beside the order it is stopped in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from jackpot_grpc.adapters.batch_connection import BatchConnection
from jackpot_grpc.adapters.change_listener import ChangeListener
from jackpot_grpc.adapters.database import (
    DbPool,
    create_db_pool,
    create_side_db_pool,
    ledger_conninfo,
)
from jackpot_grpc.adapters.probe_connection import ProbeConnection
from jackpot_grpc.config import Settings
from jackpot_grpc.contract.names import JACKPOT_SERVICE
from jackpot_grpc.entrypoints.admission import Admission
from jackpot_grpc.entrypoints.auth import build_authenticator
from jackpot_grpc.entrypoints.core_calls import CallIntake, listening_servers
from jackpot_grpc.entrypoints.database_health_probe import DatabaseHealthProbe
from jackpot_grpc.entrypoints.grpc_options import server_options
from jackpot_grpc.entrypoints.health_http import HealthHttp
from jackpot_grpc.entrypoints.interceptors import CallInterceptor
from jackpot_grpc.entrypoints.registration import GenericOnly, add_jackpot_service
from jackpot_grpc.entrypoints.servicer import JackpotServicer
from jackpot_grpc.entrypoints.watch_metrics import WatchCollector
from jackpot_grpc.entrypoints.watch_stream import PoolWatch
from jackpot_grpc.history.sampler import MetricsSampler, sampler_config
from jackpot_grpc.jobs.audit_monitor import AuditMonitor
from jackpot_grpc.jobs.checkpointer import Checkpointer
from jackpot_grpc.jobs.failover_watch import FailoverWatch
from jackpot_grpc.observability.metrics import RequestMetrics
from jackpot_grpc.observability.refusals import Refusals
from jackpot_grpc.security.open_mode import check_server
from jackpot_grpc.security.secret_rules import check_server_secrets
from jackpot_grpc.service.batcher import ContributionBatcher, Contributor, DirectContributor
from jackpot_grpc.service.jackpot import JackpotService
from jackpot_grpc.service.ledger_books import LedgerProofs
from jackpot_grpc.service.shared_audit import SharedAudit
from jackpot_grpc.service.watch_hub import WatchHub, WatchLimits
from jackpot_grpc.transport.http_site import HttpLimits
from jackpot_grpc.transport.tls import server_credentials

if TYPE_CHECKING:
    from jackpot_grpc.observability.telemetry import Telemetry

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ServerParts:
    """Everything the server is made of, built and wired but not yet running: no pool
    connection, no bound port, no background task."""

    settings: Settings
    db_pool: DbPool
    side_db_pool: DbPool  # audits and history reads on demand: never the calls' connections
    probe_connection: ProbeConnection
    service: JackpotService
    contributor: Contributor
    batcher: ContributionBatcher | None  # the contributor, when batching
    metrics: RequestMetrics
    health: health_aio.HealthServicer
    probe: DatabaseHealthProbe
    admission: Admission
    intake: CallIntake
    server: grpc.aio.Server
    address: str  # host:port the gRPC server binds when started
    sampler: MetricsSampler
    auditor: AuditMonitor
    health_http: HealthHttp
    watch_hub: WatchHub
    listener: ChangeListener | None  # None behind PgBouncer (transaction mode: no LISTEN)
    checkpointer: Checkpointer | None = None  # with JACKPOT_LEDGER_KEY_FILE and _CHECKPOINT_LOG
    failover: FailoverWatch | None = None  # the database's identity, and what a failover lost


class _Deadline:
    """When the stop must be done: set as the stop begins (from its grace); a start that
    fails unwinds with the configured grace. `served`: the server started serving (a start
    that failed before has no last minute of metrics to write)."""

    def __init__(self, grace: float) -> None:
        self.at = time.monotonic() + grace
        self.grace = grace
        self.served = False

    def set(self, grace: float) -> None:
        self.at = time.monotonic() + grace
        self.grace = grace

    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())


@dataclass(kw_only=True)
class RunningServer(ServerParts):
    """The parts, started: the ports they got, and the stack that stops them in order."""

    port: int
    health_port: int
    stack: contextlib.AsyncExitStack = field(repr=False)
    deadline: _Deadline = field(repr=False)

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, stop accepting, let in-flight calls finish, then close the pool:
        the start order of start_parts, unwound (see there for the declared order)."""
        self.deadline.set(self.settings.process.shutdown_grace if grace is None else grace)
        await self.stack.aclose()
        log.info("gRPC server stopped")


def _grpc_server(
    settings: Settings,
    service: JackpotService,
    contributor: Contributor,
    interceptors: list[Any],
    *,
    reuse_port: bool,
    health: health_aio.HealthServicer,
    refusals: Refusals,
    watch: PoolWatch | None = None,
    ledger_proofs: LedgerProofs | None = None,
) -> grpc.aio.Server:
    """The gRPC server with the jackpot, health and reflection services (not yet bound)."""
    server = grpc.aio.server(
        interceptors=interceptors, options=server_options(settings, reuse_port=reuse_port)
    )
    add_jackpot_service(
        JackpotServicer(
            service,
            contributor,
            max_wager=settings.service.max_wager,
            refusals=refusals,
            watch=watch,
            ledger_proofs=ledger_proofs,
        ),
        server,
    )
    generic_only = GenericOnly(server)  # registration.py: why no registered methods
    health_pb2_grpc.add_HealthServicer_to_server(health, generic_only)
    # What reflection.enable_server_reflection does for a grpc.aio server, given the stand-in.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(
            (
                JACKPOT_SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            )
        ),
        generic_only,
    )
    return server


def build_server(
    settings: Settings,
    database_url: str,
    *,
    port: int | None = None,
    reuse_port: bool = False,
    telemetry: Telemetry | None = None,
) -> ServerParts:
    """Build and wire every part of the server. No I/O: the pool is created closed,
    nothing is bound and no task starts; a bad setting fails here, before any of that."""
    history_config = sampler_config(settings.history)
    check_server(settings)  # no clients configured: loopback only (security/open_mode.py)
    check_server_secrets(settings)  # short tokens, key files others may read
    db_pool = create_db_pool(settings, database_url)
    service = JackpotService(
        db_pool,
        settings.service.snapshot_ttl,
        telemetry.metrics if telemetry else None,
        max_rate_sum=settings.service.max_rate_sum,
        commit_timeout=settings.database.commit_timeout,
    )
    batcher: ContributionBatcher | None = None
    contributor: Contributor
    if settings.batch.enabled:
        batcher = ContributionBatcher(
            service,
            BatchConnection(settings, database_url),
            settings.batch.max_size,
            settings.batch.queue_max_size,
            settings.batch.linger,
        )
        contributor = batcher
    else:
        contributor = DirectContributor(service, settings.batch.queue_max_size)

    metrics = RequestMetrics()
    refusals = Refusals()
    health = health_aio.HealthServicer()
    probe_connection = ProbeConnection(settings, database_url)
    probe = DatabaseHealthProbe(
        health,
        probe_connection.ping,
        settings.health.probe_interval,
        settings.health.probe_timeout,
        settings.health.failure_threshold,
        write=probe_connection.write,
        batch_age=batcher.in_flight_age if batcher is not None else None,
        batch_age_limit=settings.batch.age_limit,
    )
    service.write_committed.append(probe.write_succeeded)
    admission = Admission(
        lambda: probe.healthy,
        max_in_flight=settings.grpc.max_in_flight,
        per_connection=settings.grpc.max_in_flight_per_connection,
        refusals=refusals,
    )
    rpc_latency = telemetry.rpc_latency(JACKPOT_SERVICE) if telemetry else None
    auth = build_authenticator(settings, metrics)
    intake = CallIntake()
    interceptors: list[Any] = [
        # Tracing, when on, spans the whole call path (it turns no call away).
        *(telemetry.server_interceptors() if telemetry else []),
        # Intake, metrics, authentication and admission in one pass, in that order.
        CallInterceptor(
            [JACKPOT_SERVICE],
            metrics=metrics,
            auth=auth,
            admission=admission,
            intake=intake,
            also_record=rpc_latency.record if rpc_latency else None,
        ),
    ]
    hub = WatchHub(
        db_pool,
        service.snapshot,
        WatchLimits(
            interval=settings.watch.interval,
            max_watchers=settings.watch.max_watchers,
            max_per_connection=settings.watch.max_per_connection,
        ),
    )
    service.wins_committed.append(hub.wins_committed)
    # Other processes' changes arrive by NOTIFY (migration 0009); a transaction pooler
    # cannot LISTEN, so behind one the hub reads every JACKPOT_SNAPSHOT_TTL instead.
    listener = (
        None
        if settings.database.pgbouncer
        else ChangeListener(settings, database_url, hub.notified)
    )
    side_db_pool = create_side_db_pool(settings, database_url)
    ledger_url = ledger_conninfo(settings, database_url)  # connect_timeout: never hangs
    checkpointer = (
        Checkpointer(
            ledger_url,
            settings.ledger.key_file,
            settings.ledger.checkpoint_log,
            settings.ledger.checkpoint_interval,
        )
        if settings.ledger.key_file is not None and settings.ledger.checkpoint_log is not None
        else None
    )
    failover = FailoverWatch(
        ledger_url,
        checkpoint=checkpointer.newest if checkpointer is not None else None,
        on_loss=checkpointer.halt if checkpointer is not None else None,
        settings=settings,
    )
    probe_connection.on_connect = failover.connected
    server = _grpc_server(
        settings,
        service,
        contributor,
        interceptors,
        reuse_port=reuse_port,
        health=health,
        refusals=refusals,
        watch=PoolWatch(service, hub, settings.watch.max_lag),
        ledger_proofs=checkpointer.proofs(side_db_pool) if checkpointer is not None else None,
    )
    if telemetry is not None:
        telemetry.metrics.observe_pools(service.snapshot.latest)
        telemetry.metrics.observe_connections(db_pool.get_stats)
    # Started with the server (JACKPOT_SAMPLE_INTERVAL, JACKPOT_METRICS_RETENTION_DAYS).
    sampler = MetricsSampler(db_pool, metrics, history_config, side_db_pool=side_db_pool)
    # Replicas on one database take turns: one audit per interval across all of them. The
    # audit, like other expensive reads on demand, runs on its own small pool with a
    # statement timeout, over connections Contribute never needs.
    auditor = AuditMonitor(
        SharedAudit(side_db_pool, settings.audit.interval, full_every=settings.audit.full_every),
        settings.audit.interval,
        min_interval=settings.health.on_demand_interval,
    )
    health_http = HealthHttp(
        service,
        probe,
        metrics,
        probe_interval=settings.health.probe_interval,
        registries=[
            sampler,
            auditor,
            intake,
            WatchCollector(hub),
            failover,
            auth.registry.prometheus,
            *([telemetry.prometheus] if telemetry else []),
        ],
        clients=auth.registry.health,
        history=sampler,
        auditor=auditor,
        ping=probe_connection.ping,
        refusals=refusals,
        intake=intake,
        limits=HttpLimits.from_settings(settings),
        on_demand_interval=settings.health.on_demand_interval,
        checkpoint=(lambda: checkpointer.latest) if checkpointer is not None else None,
        failover=failover,
    )
    return ServerParts(
        settings=settings,
        db_pool=db_pool,
        side_db_pool=side_db_pool,
        probe_connection=probe_connection,
        service=service,
        contributor=contributor,
        batcher=batcher,
        metrics=metrics,
        health=health,
        probe=probe,
        admission=admission,
        intake=intake,
        server=server,
        address=f"{settings.grpc.host}:{settings.grpc.port if port is None else port}",
        sampler=sampler,
        auditor=auditor,
        health_http=health_http,
        watch_hub=hub,
        listener=listener,
        checkpointer=checkpointer,
        failover=failover,
    )


async def start_parts(parts: ServerParts, *, reuse_port: bool = False) -> RunningServer:
    """Open the pool, start the background work, bind and start serving. Each part is
    pushed on one AsyncExitStack as it starts; RunningServer.stop() (or a failure on the
    way up) unwinds the stack, so the parts stop in the reverse of this order:

    health HTTP (closes last: it answers 503 "shutting_down" through the whole drain),
    failover watch, probe connection, side pool, pool, sampler (writes the last minute
    while the pool is open), checkpointer, auditor, contributor (the batcher's last
    flight), gRPC server (stops with what is left of the grace), admission (in-flight calls
    drain), change listener, watch hub (watchers end UNAVAILABLE: they reconnect
    elsewhere), NOT_SERVING and the drain delay (balancers see it while calls are still
    served), probe, and first of all the health HTTP's "shutting_down".

    The database need not answer yet: the pool connects in the background, and a server
    started during an outage stays up (liveness SERVING, readiness NOT_SERVING, calls
    UNAVAILABLE) while its probe retries with backoff, SERVING once the database answers.
    A restart during an outage must not become a crash loop."""
    settings = parts.settings
    deadline = _Deadline(settings.process.shutdown_grace)
    async with contextlib.AsyncExitStack() as stack:
        # Closing these before they ever started (a failed start) is a no-op.
        stack.push_async_callback(parts.health_http.close)
        if parts.failover is not None:
            stack.push_async_callback(parts.failover.stop)
        stack.push_async_callback(parts.probe_connection.close)
        await parts.side_db_pool.open()  # min_size 0: connects on first use
        stack.push_async_callback(parts.side_db_pool.close)
        await parts.db_pool.open(wait=False)
        stack.push_async_callback(parts.db_pool.close)
        parts.sampler.start()
        stack.push_async_callback(lambda: parts.sampler.stop(final_flush=deadline.served))
        if parts.checkpointer is not None:
            parts.checkpointer.start()
            stack.push_async_callback(parts.checkpointer.stop)
        parts.auditor.start()
        stack.push_async_callback(parts.auditor.stop)
        if parts.batcher is not None:
            parts.batcher.start()
        stack.push_async_callback(parts.contributor.close)
        credentials = server_credentials(settings.tls)
        others = listening_servers()
        bound = (
            parts.server.add_insecure_port(parts.address)
            if credentials is None
            else parts.server.add_secure_port(parts.address, credentials)
        )
        parts.intake.server_id = min(listening_servers() - others, default=None)
        await parts.probe.set_live()
        await parts.probe.check()  # health is known before the first call arrives
        health_port = await parts.health_http.start(
            settings.health.host, settings.health.port, reuse_port=reuse_port
        )
        await parts.server.start()
        deadline.served = True
        stack.push_async_callback(
            lambda: parts.server.stop(max(0.1, deadline.at - time.monotonic()))
        )
        stack.push_async_callback(lambda: parts.admission.drain(deadline.left()))
        if parts.listener is None:  # behind PgBouncer: no LISTEN, the hub reads by the TTL
            parts.watch_hub.start(poll=settings.service.snapshot_ttl)
        else:  # listening only while anyone watches
            stack.push_async_callback(parts.listener.stop)
            parts.watch_hub.start(listen=parts.listener.want)
        stack.push_async_callback(parts.watch_hub.close)
        stack.push_async_callback(_not_serving, parts, deadline)
        parts.probe.start()
        stack.push_async_callback(parts.probe.stop)
        stack.callback(setattr, parts.health_http, "shutting_down", True)
        started = stack.pop_all()  # running: from here on, stop() unwinds it
    if not parts.probe.healthy:
        log.error(
            "started without the database (%s): NOT_SERVING until it answers; retrying",
            parts.probe.last_error,
        )
    log.info(
        "gRPC listening on %s:%d (batching %s)",
        settings.grpc.host,
        bound,
        "on" if settings.batch.enabled else "off",
    )
    log.info("health/metrics HTTP listening on %s:%d", settings.health.host, health_port)
    built = {f.name: getattr(parts, f.name) for f in fields(ServerParts)}
    return RunningServer(
        **built, port=bound, health_port=health_port, stack=started, deadline=deadline
    )


async def _not_serving(parts: ServerParts, deadline: _Deadline) -> None:
    """gRPC health says NOT_SERVING; load balancers need a moment to see it, and meanwhile
    calls are served."""
    await parts.health.enter_graceful_shutdown()
    await asyncio.sleep(min(parts.settings.process.drain_delay, deadline.grace))


async def start_server(
    settings: Settings,
    database_url: str,
    *,
    port: int | None = None,
    reuse_port: bool = False,
    telemetry: Telemetry | None = None,
) -> RunningServer:
    """Build the server and start it on `port` (0: any).

    Health/metrics HTTP listens on settings.health.host:health_port (0: any free port;
    the bound one is RunningServer.health_port).
    """
    parts = build_server(
        settings, database_url, port=port, reuse_port=reuse_port, telemetry=telemetry
    )
    return await start_parts(parts, reuse_port=reuse_port)


async def serve(settings: Settings, database_url: str) -> None:
    """`jackpot serve`'s process: telemetry, the server started, start-up's objects frozen
    out of the GC, then serve until SIGTERM or SIGINT and stop in order."""
    from jackpot_grpc.observability.telemetry import setup_telemetry
    from jackpot_grpc.runtime.signals import wait_for_signal
    from jackpot_grpc.runtime.startup_gc import freeze_startup_objects

    telemetry = setup_telemetry()
    running = await start_server(
        settings, database_url, reuse_port=settings.grpc.reuse_port, telemetry=telemetry
    )
    freeze_startup_objects()
    try:
        await wait_for_signal()
    finally:
        await running.stop()
        telemetry.shutdown()


__all__ = [
    "RunningServer",
    "ServerParts",
    "build_server",
    "serve",
    "start_parts",
    "start_server",
]
