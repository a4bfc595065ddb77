"""Request metrics on a fake clock: percentiles, windows, error classes, bounded memory."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import grpc
import pytest
from prometheus_client import generate_latest

from jackpot_grpc.observability.metrics import (
    HISTOGRAM_BUCKETS,
    RELATIVE_ERROR,
    WINDOWS,
    RequestMetrics,
    Stats,
    UnknownPeriod,
    bucket_of,
    bucket_value,
)

OK = grpc.StatusCode.OK


class FakeClock:
    def __init__(self, now: float = 10_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics(clock: FakeClock) -> RequestMetrics:
    return RequestMetrics(clock=clock)


def exact_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_every_bucket_value_is_within_the_stated_error_of_its_bucket() -> None:
    rng = random.Random(7)
    for _ in range(20_000):
        ms = math.exp(rng.uniform(math.log(0.011), math.log(59_000)))
        estimate = bucket_value(bucket_of(ms))
        assert abs(estimate - ms) <= RELATIVE_ERROR * ms * (1 + 1e-9)


@pytest.mark.parametrize(
    "draw",
    [
        lambda r: r.lognormvariate(math.log(5), 0.8),  # typical RPC latencies, ms
        lambda r: r.uniform(1, 100),
        lambda r: r.expovariate(1 / 20) + 0.05,
        lambda r: r.choice([2.0, 2.0, 2.0, 250.0]),  # bimodal: fast path and slow path
    ],
    ids=["lognormal", "uniform", "exponential", "bimodal"],
)
def test_percentiles_are_within_the_histogram_error(
    draw: Callable[[random.Random], float],
) -> None:
    rng = random.Random(42)
    values = [draw(rng) for _ in range(10_000)]
    stats = Stats()
    for v in values:
        stats.add(0, v, bucket_of(v))
    for q in (0.5, 0.9, 0.95, 0.99, 1.0):
        estimate = stats.percentile(q)
        exact = exact_percentile(values, q)
        assert estimate is not None
        assert abs(estimate - exact) <= RELATIVE_ERROR * exact * (1 + 1e-9), (q, estimate, exact)
    assert stats.sum_ms / stats.count == pytest.approx(sum(values) / len(values))


def test_summary_reports_percentiles_average_and_throughput(
    metrics: RequestMetrics, clock: FakeClock
) -> None:
    latencies_ms = list(range(1, 101))  # 1..100 ms, one request every 0.5 s
    for ms in latencies_ms:
        metrics.record("Contribute", OK, ms / 1000)
        clock.advance(0.5)
    summary = metrics.summary()
    times = summary["response_times"]
    assert summary["period"] == "since_start"
    assert summary["total_requests"] == 100
    assert times["avg"] == pytest.approx(50.5)
    assert times["min"] == 1 and times["max"] == 100
    for key, exact in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert abs(times[key] - exact) <= RELATIVE_ERROR * exact
    assert summary["window_seconds"] == pytest.approx(50.0)
    assert summary["throughput"]["per_second"] == pytest.approx(2.0)
    assert summary["throughput"]["per_minute"] == pytest.approx(120.0)
    assert summary["methods"]["Contribute"]["total_requests"] == 100


def test_server_faults_are_errors_and_caller_mistakes_are_client_errors(
    metrics: RequestMetrics,
) -> None:
    for code in (OK, OK, OK, OK, OK, OK):
        metrics.record("Contribute", code, 0.001)
    metrics.record("Contribute", grpc.StatusCode.INVALID_ARGUMENT, 0.001)
    metrics.record("Win", grpc.StatusCode.FAILED_PRECONDITION, 0.001)
    metrics.record("Win", grpc.StatusCode.UNAVAILABLE, 0.001)
    metrics.record("GetPools", grpc.StatusCode.INTERNAL, 0.001)
    summary = metrics.summary()
    assert summary["total_requests"] == 10
    assert summary["error_count"] == 2
    assert summary["client_error_count"] == 2
    assert summary["error_rate"] == pytest.approx(0.2)
    assert summary["error_rate_percent"] == pytest.approx(20.0)
    assert summary["status_codes"] == {
        "OK": 6,
        "INVALID_ARGUMENT": 1,
        "FAILED_PRECONDITION": 1,
        "UNAVAILABLE": 1,
        "INTERNAL": 1,
    }
    win = summary["methods"]["Win"]
    assert (win["total_requests"], win["error_count"], win["client_error_count"]) == (2, 1, 1)
    assert win["error_rate"] == pytest.approx(0.5)


def test_windows_exclude_requests_older_than_the_period(
    metrics: RequestMetrics, clock: FakeClock
) -> None:
    metrics.record("Contribute", OK, 0.200)  # old and slow
    clock.advance(400)  # past the 5-minute window
    for _ in range(3):
        metrics.record("Contribute", OK, 0.002)
    recent = metrics.summary("5m")
    assert recent["total_requests"] == 3
    assert recent["response_times"]["max"] == pytest.approx(2.0)
    assert metrics.summary("1h")["total_requests"] == 4
    assert metrics.summary()["total_requests"] == 4

    clock.advance(3600)  # the hour has passed too
    assert metrics.summary("5m")["total_requests"] == 0
    assert metrics.summary("5m")["response_times"]["avg"] is None
    assert metrics.summary("1h")["total_requests"] == 0
    assert metrics.summary("24h")["total_requests"] == 4
    assert metrics.summary("30d")["total_requests"] == 4

    clock.advance(31 * 86_400)
    assert metrics.summary("30d")["total_requests"] == 0
    assert metrics.summary()["total_requests"] == 4  # since start keeps everything


def test_coarse_windows_include_the_second_not_yet_rolled_up(
    metrics: RequestMetrics, clock: FakeClock
) -> None:
    metrics.record("Win", OK, 0.01)
    clock.advance(0.2)  # same second: nothing has been rolled up yet
    for period in ("5m", "1h", "24h", "30d", None):
        assert metrics.summary(period)["total_requests"] == 1, period


def test_a_window_spans_at_most_its_period(metrics: RequestMetrics, clock: FakeClock) -> None:
    clock.advance(40 * 86_400)
    for name, window in ((w.name, w) for w in WINDOWS):
        seconds = metrics.summary(name)["window_seconds"]
        assert window.seconds - window.slot_seconds <= seconds <= window.seconds


def test_a_young_process_reports_its_uptime_as_the_window(
    metrics: RequestMetrics, clock: FakeClock
) -> None:
    clock.advance(30)
    for _ in range(60):
        metrics.record("GetPools", OK, 0.001)
    summary = metrics.summary("1h")
    assert summary["window_seconds"] == pytest.approx(30)
    assert summary["throughput"]["per_second"] == pytest.approx(2.0)


def test_unknown_period_is_refused(metrics: RequestMetrics) -> None:
    with pytest.raises(UnknownPeriod, match="7d"):
        metrics.summary("7d")


def test_memory_stays_bounded_over_a_long_run(metrics: RequestMetrics, clock: FakeClock) -> None:
    most = sum(w.slots for w in WINDOWS)
    rng = random.Random(1)
    recorded = 0
    # Two busy hours (every slot of the fine rings in use), then forty quiet days.
    for step, count in ((0.5, 2 * 3600 * 2), (1000.0, 40 * 86_400 // 1000)):
        for _ in range(count):
            metrics.record(rng.choice(("Contribute", "Win")), OK, rng.uniform(0.001, 0.1))
            clock.advance(step)
            recorded += 1
        assert metrics.slot_count() <= 2 * most
    for series in metrics._series.values():
        for ring, window in zip(series.rings, WINDOWS, strict=True):
            assert len(ring.slots) == window.slots
            assert all(len(s.hist) == HISTOGRAM_BUCKETS for s in ring.slots if s is not None)
    assert metrics.summary()["total_requests"] == recorded


def test_method_names_are_bounded(metrics: RequestMetrics) -> None:
    for i in range(200):
        metrics.record(f"Method{i}", OK, 0.001)
    methods = metrics.summary()["methods"]
    assert len(methods) <= 65
    assert sum(m["total_requests"] for m in methods.values()) == 200


def test_prometheus_grpc_server_metrics_follow_the_records(metrics: RequestMetrics) -> None:
    """go-grpc-prometheus's names and labels, so community dashboards read them as they are."""
    metrics.started("Contribute")
    metrics.record("Contribute", OK, 0.004)
    metrics.record("Contribute", OK, 0.3)
    metrics.record("Contribute", grpc.StatusCode.INVALID_ARGUMENT, 0.001)
    text = generate_latest(metrics.registry).decode()
    labels = 'grpc_method="Contribute",grpc_service="jackpot.v1.JackpotService",grpc_type="unary"'
    assert f"grpc_server_started_total{{{labels}}} 1.0" in text
    assert f'grpc_server_handled_total{{grpc_code="OK",{labels}}} 2.0' in text
    assert f'grpc_server_handled_total{{grpc_code="INVALID_ARGUMENT",{labels}}} 1.0' in text
    assert f'grpc_server_handling_seconds_bucket{{{labels},le="0.005"}} 2.0' in text
    assert f"grpc_server_handling_seconds_count{{{labels}}} 3.0" in text
    assert "jackpot_grpc_requests" not in text
