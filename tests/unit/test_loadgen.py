"""The benchmark's load generator: its statistics (its runs against a real server are in
tests/e2e/test_loadgen_run.py)."""

from __future__ import annotations

import random

import pytest

from bench.loadgen import latency_summary
from jackpot_grpc.ops.loadtest import percentile


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
