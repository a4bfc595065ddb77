"""OpenTelemetry: traces (a span per RPC and per SQL statement) and business metrics.

Tracing is on only when there is somewhere to send spans (OTEL_EXPORTER_OTLP_ENDPOINT, or
an exporter passed in by a test), so an unconfigured service pays nothing for it. Metrics
always go to a Prometheus registry served by the health port's /metrics/prometheus, and
also to OTLP when an endpoint is configured. RPC latency is recorded in OpenTelemetry
(`rpc.server.duration`) only when metrics leave the process that way: Prometheus already
has it from jackpot_grpc.metrics, and the record costs ~7 us per call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from prometheus_client import CollectorRegistry

from jackpot_grpc.domain.model import GROUPS, ContributionResult, Group, PoolState, WinResult

# OpenTelemetry service.name when OTEL_SERVICE_NAME does not set one.
DEFAULT_OTEL_SERVICE_NAME = "jackpot-service"


class BusinessMetrics:
    """The runbook's business metrics: contributions, wins, batches, config changes, pools.

    The service records through its port, jackpot_grpc.service.ports.ServiceMetrics.
    """

    def __init__(self, meter_provider: MeterProvider) -> None:
        meter = meter_provider.get_meter("jackpot_grpc")
        self._contributions = meter.create_counter(
            "jackpot.contributions", unit="1", description="Contributions applied, per group"
        )
        self._contributed = meter.create_counter(
            "jackpot.contribution.amount", unit="minor_units", description="Money contributed"
        )
        self._wins = meter.create_counter("jackpot.wins", unit="1", description="Wins paid")
        self._won = meter.create_counter(
            "jackpot.win.amount", unit="minor_units", description="Money paid out"
        )
        self._batch_size = meter.create_histogram(
            "jackpot.batch.size", unit="1", description="Contributions per group commit"
        )
        self._config_changes = meter.create_counter(
            "jackpot.config.changes", unit="1", description="Audited config changes"
        )
        self._meter = meter

    def contributions_applied(self, results: Iterable[ContributionResult]) -> None:
        counts = dict.fromkeys(GROUPS, 0)
        amounts = dict.fromkeys(GROUPS, 0)
        batch = 0
        for result in results:
            if result.replayed:
                continue
            batch += 1
            for group, amount in result.shares.amounts.items():
                if amount:
                    counts[group] += 1
                    amounts[group] += amount
        if not batch:
            return
        self._batch_size.record(batch)
        for group in GROUPS:
            attributes = {"group": group.value}
            self._contributions.add(counts[group], attributes)
            self._contributed.add(amounts[group], attributes)

    def win_paid(self, result: WinResult) -> None:
        if result.replayed:
            return
        attributes = {"group": result.pool.group.value}
        self._wins.add(1, attributes)
        self._won.add(result.outcome.amount, attributes)

    def config_changed(self, group: Group) -> None:
        self._config_changes.add(1, {"group": group.value})

    def observe_pools(self, read: Callable[[], Sequence[PoolState] | None]) -> None:
        """Pool amounts as gauges, read at collection time (from the in-process snapshot)."""

        def amounts(_options: CallbackOptions) -> Iterable[Observation]:
            for pool in read() or ():
                yield Observation(pool.current_amount, {"group": pool.group.value})

        self._meter.create_observable_gauge(
            "jackpot.pool.amount", callbacks=[amounts], unit="minor_units"
        )

    def observe_connections(self, stats: Callable[[], dict[str, int]]) -> None:
        """Database pool connections (psycopg_pool's get_stats), at collection time."""

        def connections(_options: CallbackOptions) -> Iterable[Observation]:
            current = stats()
            yield Observation(current.get("pool_size", 0), {"state": "open"})
            yield Observation(current.get("pool_available", 0), {"state": "idle"})
            yield Observation(current.get("requests_waiting", 0), {"state": "waiting"})

        self._meter.create_observable_gauge(
            "jackpot.db.connections", callbacks=[connections], unit="1"
        )


class RpcLatency:
    """`rpc.server.duration` (OpenTelemetry's RPC semantic conventions), per method and
    status code, for the jackpot service's unary calls."""

    def __init__(self, meter_provider: MeterProvider, service: str) -> None:
        self._service = service
        self._histogram = meter_provider.get_meter("jackpot_grpc").create_histogram(
            "rpc.server.duration", unit="s", description="Server time of each jackpot RPC"
        )
        # One attribute dict per method and code, built once: calls reuse it.
        self._attributes: dict[tuple[str, grpc.StatusCode], dict[str, Any]] = {}

    def record(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        attributes = self._attributes.get((method, code))
        if attributes is None:
            attributes = self._attributes[(method, code)] = {
                "rpc.system": "grpc",
                "rpc.service": self._service,
                "rpc.method": method,
                "rpc.grpc.status_code": code.value[0],
            }
        self._histogram.record(seconds, attributes)


@dataclass
class Telemetry:
    meter_provider: MeterProvider
    tracer_provider: TracerProvider | None
    prometheus: CollectorRegistry
    metrics: BusinessMetrics
    _instrumented: list[Any] = field(default_factory=list)
    # Set when metrics are exported beyond the Prometheus registry (OTLP, a test's reader).
    exports_metrics: bool = False

    def rpc_latency(self, service: str) -> RpcLatency | None:
        return RpcLatency(self.meter_provider, service) if self.exports_metrics else None

    def server_interceptors(self) -> list[Any]:
        """The OpenTelemetry gRPC server interceptor, when tracing is on."""
        if self.tracer_provider is None:
            return []
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        return [aio_server_interceptor(tracer_provider=self.tracer_provider)]  # type: ignore[no-untyped-call]

    def shutdown(self) -> None:
        for instrumentor in self._instrumented:
            instrumentor.uninstrument()
        self._instrumented.clear()
        self.meter_provider.shutdown()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()


def setup_telemetry(
    *,
    span_exporter: SpanExporter | None = None,
    metric_readers: Sequence[MetricReader] = (),
    environ: dict[str, str] | None = None,
) -> Telemetry:
    """Providers for this process; nothing global is set, so tests can make several."""
    env = dict(os.environ if environ is None else environ)
    resource = Resource.create(
        {"service.name": env.get("OTEL_SERVICE_NAME", DEFAULT_OTEL_SERVICE_NAME)}
    )
    otlp = bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))

    registry = CollectorRegistry()
    readers: list[MetricReader] = [PrometheusMetricReader(registry=registry), *metric_readers]
    if otlp:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)

    tracer_provider: TracerProvider | None = None
    instrumented: list[Any] = []
    if span_exporter is None and otlp:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter()
    if span_exporter is not None:
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

        psycopg_instrumentor = PsycopgInstrumentor()
        psycopg_instrumentor.instrument(tracer_provider=tracer_provider, skip_dep_check=True)
        instrumented.append(psycopg_instrumentor)

    return Telemetry(
        meter_provider=meter_provider,
        tracer_provider=tracer_provider,
        prometheus=registry,
        metrics=BusinessMetrics(meter_provider),
        _instrumented=instrumented,
        exports_metrics=otlp or bool(metric_readers),
    )
