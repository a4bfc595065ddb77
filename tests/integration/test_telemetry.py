"""Spans and business metrics reach in-memory exporters from a real server and database."""

from __future__ import annotations

import dataclasses
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
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from jackpot_grpc.telemetry import Telemetry, setup_telemetry


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
        dataclasses.replace(settings, batching=False), database_url, port=0, telemetry=telemetry
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
    points = {
        (p.attributes["rpc.method"], p.attributes["rpc.grpc.status_code"]): p
        for p in metric_points(exporters[1])["rpc.server.call.duration"]
    }
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert set(points) == {("GetPools", 0), ("Contribute", invalid)}
    assert points[("GetPools", 0)].count == 2 and points[("Contribute", invalid)].count == 1
    assert 0 < points[("GetPools", 0)].sum < 5  # seconds
    assert points[("GetPools", 0)].attributes["rpc.service"] == "jackpot.v1.JackpotService"
