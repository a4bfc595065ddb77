"""OpenTelemetry: traces (a span per RPC and per SQL statement) and business metrics.

The standard environment of the OpenTelemetry SDK specification is honoured:

- Resource: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` as the SDK reads them; only
  what they leave unset is filled in: service.name (DEFAULT_OTEL_SERVICE_NAME, or the
  gateway's own), service.version (this package's version) and service.instance.id (a
  fresh UUID per process).
- Export: `OTEL_EXPORTER_OTLP_ENDPOINT`, or per signal `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
  `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`; `OTEL_EXPORTER_OTLP_PROTOCOL` (or the per-signal
  `..._TRACES_PROTOCOL` / `..._METRICS_PROTOCOL`): `grpc` (default, port 4317) or
  `http/protobuf` (port 4318; a generic endpoint gets `/v1/traces`, `/v1/metrics` appended,
  a per-signal one is used as given). `OTEL_TRACES_EXPORTER=none` / `OTEL_METRICS_EXPORTER=none`
  turn one signal's export off. Headers, timeouts and certificates are read by the exporters.
- `OTEL_SDK_DISABLED=true`: no spans, no OTLP, no OpenTelemetry metrics (the SDK's meters
  become no-ops, so the business counters leave /metrics/prometheus too; the gRPC server
  metrics and the gauges the health port collects itself remain).

Tracing is on only when there is somewhere to send spans (a traces endpoint, or an exporter
passed in by a test), so an unconfigured service pays nothing for it. Metrics always go to
a Prometheus registry served by the health port's /metrics/prometheus, and also to OTLP
when a metrics endpoint is configured. RPC latency is recorded in OpenTelemetry
(`rpc.server.call.duration`, seconds) only when metrics leave the process that way:
Prometheus already has it from jackpot_grpc.observability.metrics, and the record costs
~7 us per call.

About 400 lines because it is the whole of the OpenTelemetry setup: the environment above
(resource, exporters, protocols), the tracing and the business metrics read the same
settings and are started and shut down together (setup_telemetry, Telemetry.shutdown).
"""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import grpc
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.semconv._incubating.metrics.rpc_metrics import RPC_SERVER_CALL_DURATION
from prometheus_client import CollectorRegistry

from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.contract.names import JACKPOT_SERVICE
from jackpot_grpc.domain.model import GROUPS, Group, PoolState, WinResult
from jackpot_grpc.runtime.version import package_version

# OpenTelemetry service.name when OTEL_SERVICE_NAME does not set one.
DEFAULT_OTEL_SERVICE_NAME = "jackpot-service"
GATEWAY_OTEL_SERVICE_NAME = "jackpot-gateway"

Signal = Literal["traces", "metrics"]
Protocol = Literal["grpc", "http/protobuf"]
PROTOCOLS: tuple[Protocol, ...] = ("grpc", "http/protobuf")
# The semantic conventions' advice for rpc.server.call.duration (seconds).
RPC_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def sdk_disabled(env: Mapping[str, str]) -> bool:
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def signal_endpoint(env: Mapping[str, str], signal: Signal) -> str | None:
    """Where a signal goes: its own endpoint, else the generic one; None when neither is
    set or the signal's exporter is `none`."""
    if env.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip().lower() == "none":
        return None
    own = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
    if own:
        return own
    generic = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not generic:
        return None
    return (
        _http_path(generic, signal) if signal_protocol(env, signal) == "http/protobuf" else generic
    )


def _http_path(base: str, signal: Signal) -> str:
    """The spec's rule for a generic endpoint over HTTP: append /v1/<signal>."""
    return f"{base.rstrip('/')}/v1/{signal}"


def signal_protocol(env: Mapping[str, str], signal: Signal) -> Protocol:
    raw = (
        env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
        or "grpc"
    )
    for protocol in PROTOCOLS:
        if raw == protocol:
            return protocol
    raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf, got {raw!r}")


def otel_resource(default_service_name: str = DEFAULT_OTEL_SERVICE_NAME) -> Resource:
    """The SDK's resource (telemetry.sdk.*, OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME),
    with service.name, service.version and service.instance.id added where it has none."""
    from_env = OTELResourceDetector().detect().attributes
    ours = {
        "service.name": default_service_name,
        "service.version": package_version(),
        "service.instance.id": str(uuid.uuid4()),
    }
    return Resource.create({k: v for k, v in ours.items() if k not in from_env})


# The OTLP exporter of each signal over each protocol, (module, class): imported only when
# that export is configured.
_OTLP_EXPORTERS: dict[tuple[Signal, Protocol], tuple[str, str]] = {
    ("traces", "grpc"): (
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "OTLPSpanExporter",
    ),
    ("traces", "http/protobuf"): (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "OTLPSpanExporter",
    ),
    ("metrics", "grpc"): (
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
        "OTLPMetricExporter",
    ),
    ("metrics", "http/protobuf"): (
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
        "OTLPMetricExporter",
    ),
}


@overload
def otlp_exporter(env: Mapping[str, str], signal: Literal["traces"]) -> SpanExporter | None: ...
@overload
def otlp_exporter(env: Mapping[str, str], signal: Literal["metrics"]) -> MetricExporter | None: ...
def otlp_exporter(env: Mapping[str, str], signal: Signal) -> SpanExporter | MetricExporter | None:
    """The signal's OTLP exporter over its protocol; None when the signal goes nowhere."""
    endpoint = signal_endpoint(env, signal)
    if endpoint is None:
        return None
    module, name = _OTLP_EXPORTERS[signal, signal_protocol(env, signal)]
    exporter: SpanExporter | MetricExporter = getattr(importlib.import_module(module), name)(
        endpoint=endpoint
    )
    return exporter


_GROUP_ATTRIBUTES = {g: {"group": g.value} for g in GROUPS}  # made once, never changed


def _per_group(totals: Mapping[Group, int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    """An observable counter's callback: each group's running total."""

    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(totals[g], _GROUP_ATTRIBUTES[g]) for g in GROUPS]

    return observe


class BusinessMetrics:
    """The runbook's business metrics: contributions, wins, batches, config changes, pools.

    The service records through its port, jackpot_grpc.service.ports.ServiceMetrics.
    """

    def __init__(self, meter_provider: MeterProvider) -> None:
        meter = meter_provider.get_meter("jackpot_grpc")
        # Prometheus names (the exporter adds the unit and `_total`): jackpot_contributions_total,
        # jackpot_contribution_amount_minor_units_total, jackpot_wins_total,
        # jackpot_win_amount_minor_units_total, jackpot_batch_size (histogram),
        # jackpot_config_changes_total, jackpot_pool_amount_minor_units.
        # Contributions are counted into plain integers and read at collection time: an
        # SDK counter's add() costs several µs (attributes, locks, aggregation), and every
        # contribution batch would pay six of them on the event loop. Exported the same way
        # (cumulative, monotonic sums).
        self._counted: dict[Group, int] = dict.fromkeys(GROUPS, 0)
        self._amounts: dict[Group, int] = dict.fromkeys(GROUPS, 0)
        meter.create_observable_counter(
            "jackpot.contributions",
            callbacks=[_per_group(self._counted)],
            unit="{contribution}",
            description="Contributions applied, per group",
        )
        meter.create_observable_counter(
            "jackpot.contribution.amount",
            callbacks=[_per_group(self._amounts)],
            unit="minor_units",
            description="Money contributed",
        )
        self._wins = meter.create_counter("jackpot.wins", unit="{win}", description="Wins paid")
        self._won = meter.create_counter(
            "jackpot.win.amount", unit="minor_units", description="Money paid out"
        )
        self._batch_size = meter.create_histogram(
            "jackpot.batch.size",
            unit="{contribution}",
            description="Contributions per group commit",
            explicit_bucket_boundaries_advisory=BATCH_SIZE_BUCKETS,
        )
        self._config_changes = meter.create_counter(
            "jackpot.config.changes", unit="{change}", description="Audited config changes"
        )
        self._meter = meter

    def contributions_counted(
        self, written: int, counts: Mapping[Group, int], amounts: Mapping[Group, int]
    ) -> None:
        """A batch of `written` rows, with how many moved each pool and by how much."""
        if not written:
            return
        self._batch_size.record(written)
        for group in GROUPS:
            self._counted[group] += counts[group]
            self._amounts[group] += amounts[group]

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
            "jackpot.pool.amount",
            callbacks=[amounts],
            unit="minor_units",
            description="Each pool's amount in the in-process snapshot",
        )

    def observe_connections(self, stats: Callable[[], dict[str, int]]) -> None:
        """Database pool connections (psycopg_pool's get_stats), at collection time."""

        def connections(_options: CallbackOptions) -> Iterable[Observation]:
            current = stats()
            yield Observation(current.get("pool_size", 0), {"state": "open"})
            yield Observation(current.get("pool_available", 0), {"state": "idle"})
            yield Observation(current.get("requests_waiting", 0), {"state": "waiting"})

        self._meter.create_observable_gauge(
            "jackpot.db.connections",
            callbacks=[connections],
            unit="{connection}",
            description="Database pool connections by state",
        )


class RpcLatency:
    """`rpc.server.call.duration` in seconds (OpenTelemetry's RPC semantic conventions), with
    rpc.system, rpc.service, rpc.method and rpc.grpc.status_code, for unary calls."""

    def __init__(self, meter_provider: MeterProvider, service: str) -> None:
        self._service = service
        self._histogram = meter_provider.get_meter("jackpot_grpc").create_histogram(
            RPC_SERVER_CALL_DURATION,
            unit="s",
            description="Measures the duration of inbound RPC.",
            explicit_bucket_boundaries_advisory=RPC_DURATION_BUCKETS,
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
    resource: Resource = field(default_factory=Resource.get_empty)
    span_exporter: SpanExporter | None = None
    metric_exporter: MetricExporter | None = None
    _instrumented: list[Any] = field(default_factory=list)
    # Set when metrics are exported beyond the Prometheus registry (OTLP, a test's reader).
    exports_metrics: bool = False

    def rpc_latency(self, service: str) -> RpcLatency | None:
        return RpcLatency(self.meter_provider, service) if self.exports_metrics else None

    def server_interceptors(self) -> list[Any]:
        """The OpenTelemetry gRPC server interceptor, when tracing is on."""
        if self.tracer_provider is None:
            return []
        from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

        # Only JackpotService: the interceptor cannot wrap grpc.health.v1's Watch (it writes
        # with context.write, no async iterator), and health checks are noise in traces.
        only_jackpot = filters.service_name(JACKPOT_SERVICE)
        return [
            aio_server_interceptor(tracer_provider=self.tracer_provider, filter_=only_jackpot)  # type: ignore[no-untyped-call]
        ]

    def client_interceptors(self) -> list[Any]:
        """The OpenTelemetry gRPC client interceptors (a span per call, the trace context
        injected into the metadata), when tracing is on."""
        if self.tracer_provider is None:
            return []
        from opentelemetry.instrumentation.grpc import aio_client_interceptors

        return list(aio_client_interceptors(tracer_provider=self.tracer_provider))  # type: ignore[no-untyped-call]

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
    environ: Mapping[str, str] | None = None,
    default_service_name: str = DEFAULT_OTEL_SERVICE_NAME,
    instrument_sql: bool = True,
) -> Telemetry:
    """Providers for this process; nothing global is set, so tests can make several.

    `environ` holds the OTEL_* settings read here (default: os.environ); the resource comes
    from the SDK's own reading of os.environ.
    """
    env = os.environ if environ is None else environ
    disabled = sdk_disabled(env)
    for signal in ("traces", "metrics"):
        signal_protocol(env, signal)  # a bad value fails at start, endpoint or not
    resource = otel_resource(default_service_name)

    registry = CollectorRegistry()
    readers: list[MetricReader] = [PrometheusMetricReader(registry=registry), *metric_readers]
    metric_exporter = None if disabled else otlp_exporter(env, "metrics")
    if metric_exporter is not None:
        readers.append(PeriodicExportingMetricReader(metric_exporter))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)

    tracer_provider: TracerProvider | None = None
    instrumented: list[Any] = []
    if span_exporter is None and not disabled:
        span_exporter = otlp_exporter(env, "traces")
    if span_exporter is not None:
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        if instrument_sql:
            from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

            psycopg_instrumentor = PsycopgInstrumentor()
            psycopg_instrumentor.instrument(tracer_provider=tracer_provider, skip_dep_check=True)
            instrumented.append(psycopg_instrumentor)

    return Telemetry(
        meter_provider=meter_provider,
        tracer_provider=tracer_provider,
        prometheus=registry,
        metrics=BusinessMetrics(meter_provider),
        resource=resource,
        span_exporter=span_exporter,
        metric_exporter=metric_exporter,
        _instrumented=instrumented,
        exports_metrics=metric_exporter is not None or bool(metric_readers),
    )
