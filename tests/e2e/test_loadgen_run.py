"""The benchmark's load generator: short real runs against a server over a real channel
(its statistics are unit-tested in tests/unit/test_loadgen.py)."""

from __future__ import annotations

import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from bench.loadgen import LoadSpec, run_load
from jackpot_grpc.entrypoints.server import RunningServer


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
