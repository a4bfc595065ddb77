"""The benchmark's load generator: its statistics, and a short real run against a server."""

from __future__ import annotations

import random

import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from bench.loadgen import LoadSpec, latency_summary, run_load
from jackpot_grpc.entrypoints.server import RunningServer
from testkit.figures import percentile


def test_percentile_is_nearest_rank_on_known_samples() -> None:
    samples = [float(v) for v in range(1, 101)]  # 1..100
    random.Random(7).shuffle(samples)  # order must not matter
    assert percentile(samples, 50) == 50
    assert percentile(samples, 90) == 90
    assert percentile(samples, 99) == 99
    assert percentile(samples, 100) == 100
    assert percentile(samples, 0) == 1


def test_percentile_small_and_uneven_samples() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 50) == 20.0  # ceil(0.5 * 4) = 2nd
    assert percentile([10.0, 20.0, 30.0, 40.0], 51) == 30.0
    assert percentile([5.0], 99) == 5.0
    # 99.9 * 1000 / 100 is 999.0000000000001 in floats: still the 999th sample.
    assert percentile([float(v) for v in range(1, 1001)], 99.9) == 999.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary() -> None:
    summary = latency_summary([4.0, 1.0, 3.0, 2.0])
    assert summary == {"p50": 2.0, "p90": 4.0, "p95": 4.0, "p99": 4.0, "max": 4.0, "mean": 2.5}
    assert latency_summary([])["p99"] is None


async def test_short_run_counts_calls(
    server: RunningServer, stub: jackpot_pb2_grpc.JackpotServiceStub
) -> None:
    spec = LoadSpec(
        "contribute", f"127.0.0.1:{server.port}", concurrency=4, duration=0.5, warmup=0.1
    )
    result = await run_load(spec)
    assert result.error_count == 0
    assert result.calls > 0
    assert result.items == result.calls
    assert len(result.latencies_ms) == result.calls
    # The window is the measured duration itself (workers run past its end), not a clock
    # reading: exact but for float rounding.
    assert result.window_s == pytest.approx(spec.duration, abs=1e-9)
    assert result.calls_per_s == pytest.approx(result.calls / result.window_s)
    # Every acknowledged call (warm-up included) is one ledger row.
    stats = await stub.GetStatistics(pb.GetStatisticsRequest())
    assert stats.total_contribution_count == result.total_ok_calls >= result.calls


async def test_short_run_counts_errors_by_status(server: RunningServer) -> None:
    spec = LoadSpec(
        "contribute",
        f"127.0.0.1:{server.port}",
        concurrency=2,
        duration=0.5,
        warmup=0.0,
        wager_amount=0,  # rejected: a wager must be positive
    )
    result = await run_load(spec)
    assert result.calls == 0
    assert result.total_ok_calls == 0
    assert set(result.errors) == {"INVALID_ARGUMENT"}
    assert result.error_count == len(result.latencies_ms) > 0


async def test_batch_run_counts_items(server: RunningServer) -> None:
    spec = LoadSpec(
        "contribute_batch",
        f"127.0.0.1:{server.port}",
        concurrency=2,
        batch_items=10,
        warmup=0.0,
        duration=30.0,
        max_calls=5,  # stops after 5 calls, long before the duration
    )
    result = await run_load(spec)
    assert result.error_count == 0
    assert result.total_ok_calls == result.calls == 5
    assert result.items == result.total_ok_items == 50
    assert result.window_s < 30
