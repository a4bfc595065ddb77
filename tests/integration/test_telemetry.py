"""Spans and business metrics reach in-memory exporters from a real server and database."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest

from jackpot_grpc.config import Settings
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from jackpot_grpc.observability.telemetry import Telemetry, setup_telemetry


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


@pytest.fixture
def exporters() -> tuple[InMemorySpanExporter, InMemoryMetricReader]:
    return InMemorySpanExporter(), InMemoryMetricReader()


@pytest.fixture
async def traced(
    settings: Settings,
    database_url: str,
    exporters: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> AsyncIterator[tuple[RunningServer, Telemetry]]:
    spans, reader = exporters
    telemetry = setup_telemetry(span_exporter=spans, metric_readers=[reader], environ={})
    running = await start_server(
        dataclasses.replace(settings, batch=dataclasses.replace(settings.batch, enabled=False)),
        database_url,
        port=0,
        telemetry=telemetry,
    )
    yield running, telemetry
    await running.stop(grace=1.0)
    telemetry.shutdown()


async def test_rpc_and_sql_spans_share_the_callers_trace(
    traced: tuple[RunningServer, Telemetry],
    exporters: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    running, telemetry = traced
    trace_id = uuid.uuid4().hex
    parent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
        await stub.Contribute(
            pb.ContributeRequest(game_id="traced", wager_amount=10_000),
            metadata=(("traceparent", parent),),
        )
    assert telemetry.tracer_provider is not None
    telemetry.tracer_provider.force_flush()
    finished = exporters[0].get_finished_spans()
    in_trace = [
        s for s in finished if s.context is not None and f"{s.context.trace_id:032x}" == trace_id
    ]
    names = [s.name for s in in_trace]
    assert "/jackpot.v1.JackpotService/Contribute" in names
    # The statements of the contribution are children in the same trace.
    assert any(name.startswith(("UPDATE", "INSERT", "SELECT")) for name in names), names


async def test_business_metrics_count_contributions_and_wins(
    traced: tuple[RunningServer, Telemetry],
    exporters: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    running, telemetry = traced
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
        reply = await stub.Contribute(pb.ContributeRequest(game_id="m", wager_amount=10_000))
        win = await stub.Win(
            pb.WinRequest(
                group=pb.JACKPOT_GROUP_MEGA, game_id="m", user_id=str(uuid.uuid4()), win_amount=7
            )
        )
    points = metric_points(exporters[1])
    contributed = {p.attributes["group"]: p.value for p in points["jackpot.contribution.amount"]}
    assert contributed == {
        "minor": reply.contributions[0].amount,
        "major": reply.contributions[1].amount,
        "mega": reply.contributions[2].amount,
    }
    assert [p.value for p in points["jackpot.win.amount"]] == [win.actual_win_amount]
    amounts = {p.attributes["group"]: p.value for p in points["jackpot.pool.amount"]}
    assert amounts["mega"] == win.remaining_amount
    text = generate_latest(telemetry.prometheus).decode()
    assert 'jackpot_wins_total{group="mega"' in text


async def test_rpc_latency_is_an_opentelemetry_histogram_per_method_and_code(
    traced: tuple[RunningServer, Telemetry],
    exporters: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    running, _ = traced
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
        await stub.GetPools(pb.GetPoolsRequest())
        await stub.GetPools(pb.GetPoolsRequest())
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Contribute(pb.ContributeRequest(game_id="m", wager_amount=0))
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    expected = {("GetPools", 0), ("Contribute", invalid)}
    # grpc.aio's abort sends the status before it raises, so the client may see the error
    # a moment before the interceptor's `finally` records the call: wait a bounded while.
    deadline = time.monotonic() + 5
    while True:
        points = {
            (p.attributes["rpc.method"], p.attributes["rpc.grpc.status_code"]): p
            for p in metric_points(exporters[1])["rpc.server.call.duration"]
        }
        if set(points) == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    assert set(points) == expected
    assert points[("GetPools", 0)].count == 2 and points[("Contribute", invalid)].count == 1
    assert 0 < points[("GetPools", 0)].sum < 5  # seconds
    assert points[("GetPools", 0)].attributes["rpc.service"] == "jackpot.v1.JackpotService"


async def test_one_trace_runs_from_rest_through_grpc_to_sql(
    traced: tuple[RunningServer, Telemetry],
    exporters: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    import aiohttp
    from opentelemetry.trace import SpanKind

    from jackpot_grpc.gateway.app import create_gateway_app, start_gateway

    running, telemetry = traced
    app = create_gateway_app(
        f"127.0.0.1:{running.port}",
        max_body_bytes=4096,
        metrics_url="http://127.0.0.1:9/metrics",
        telemetry=telemetry,
    )
    gateway = await start_gateway(app, "127.0.0.1", 0, shutdown_timeout=1.0)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{gateway.port}/api/jackpot/contribute",
                json={"gameId": "rest", "wagerAmount": "10000"},
            ) as response,
        ):
            assert response.status == 200, await response.text()
    finally:
        await gateway.stop()
    assert telemetry.tracer_provider is not None
    telemetry.tracer_provider.force_flush()
    spans = exporters[0].get_finished_spans()
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    rest = next(s for s in spans if s.kind == SpanKind.SERVER and s.name.startswith("POST"))
    assert rest.parent is None  # the trace starts at the gateway
    assert rest.context is not None
    in_trace = [s for s in spans if s.context and s.context.trace_id == rest.context.trace_id]

    def parent_of(span: Any) -> Any:
        return by_id[span.parent.span_id]

    client = next(s for s in in_trace if s.kind == SpanKind.CLIENT and "Contribute" in s.name)
    server = next(s for s in in_trace if s.kind == SpanKind.SERVER and "Contribute" in s.name)
    assert parent_of(client) is rest
    assert parent_of(server) is client
    sql = [s for s in in_trace if s.name.startswith(("UPDATE", "INSERT", "SELECT"))]
    assert sql, [s.name for s in in_trace]
    for statement in sql:  # each statement hangs below the gRPC server span
        ancestor = parent_of(statement)
        while ancestor is not server and ancestor.parent is not None:
            ancestor = parent_of(ancestor)
        assert ancestor is server, statement.name


def test_the_resource_honours_otel_variables_and_adds_version_and_instance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from jackpot_grpc.observability.telemetry import DEFAULT_OTEL_SERVICE_NAME
    from jackpot_grpc.runtime.version import package_version

    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    plain = setup_telemetry(environ={})
    attributes = plain.resource.attributes
    assert attributes["service.name"] == DEFAULT_OTEL_SERVICE_NAME
    assert attributes["service.version"] == package_version()
    assert uuid.UUID(str(attributes["service.instance.id"]))
    plain.shutdown()

    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES",
        "service.name=from-attributes,service.instance.id=pod-7,deployment.environment=test",
    )
    configured = setup_telemetry(environ={})
    attributes = configured.resource.attributes
    assert attributes["service.name"] == "from-attributes"  # not overridden any more
    assert attributes["service.instance.id"] == "pod-7"
    assert attributes["deployment.environment"] == "test"
    configured.shutdown()

    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-service-name")
    named = setup_telemetry(environ={})
    assert named.resource.attributes["service.name"] == "from-service-name"
    named.shutdown()


def test_otlp_endpoints_protocols_and_the_disable_switch() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    per_signal = setup_telemetry(
        environ={
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/custom/traces",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:9",
        },
        instrument_sql=False,
    )
    assert isinstance(per_signal.span_exporter, HttpSpanExporter)
    assert per_signal.span_exporter._endpoint == "http://127.0.0.1:9/custom/traces"
    assert isinstance(per_signal.metric_exporter, OTLPMetricExporter)  # grpc, the default
    assert per_signal.tracer_provider is not None and per_signal.exports_metrics
    per_signal.shutdown()

    generic = setup_telemetry(
        environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9/",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRICS_EXPORTER": "none",
        },
        instrument_sql=False,
    )
    assert isinstance(generic.span_exporter, HttpSpanExporter)
    assert generic.span_exporter._endpoint == "http://127.0.0.1:9/v1/traces"
    assert generic.metric_exporter is None and not generic.exports_metrics
    generic.shutdown()

    disabled = setup_telemetry(
        environ={"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    )
    assert disabled.tracer_provider is None and disabled.metric_exporter is None
    assert disabled.server_interceptors() == [] and disabled.client_interceptors() == []
    disabled.shutdown()

    with pytest.raises(ConfigError, match="grpc or http/protobuf"):
        setup_telemetry(environ={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
