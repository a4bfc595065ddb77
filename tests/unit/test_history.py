"""Metrics history without a database: drains, exact histogram merging, the bounded buffer,
configuration, and the trend's rendering."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import grpc
import pytest

from jackpot_grpc.config import Settings
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.history.sampler import MetricsSampler, SamplerConfig, sampler_config
from jackpot_grpc.history.trend import (
    Trend,
    TrendDay,
    bar,
    parse_period,
    render_trend,
    sparkline,
)
from jackpot_grpc.observability.history_records import Rollup
from jackpot_grpc.observability.metrics import (
    RELATIVE_ERROR,
    RequestMetrics,
    Stats,
    bucket_of,
    summarize,
)

OK = grpc.StatusCode.OK


class FakeClock:
    def __init__(self, now: float = 50_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def exact_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_drain_hands_over_each_call_once_and_pending_only_peeks() -> None:
    clock = FakeClock()
    metrics = RequestMetrics(clock=clock)
    metrics.record("Contribute", OK, 0.002)
    metrics.record("Contribute", grpc.StatusCode.INVALID_ARGUMENT, 0.001)
    metrics.record("Win", grpc.StatusCode.UNAVAILABLE, 0.5)

    peeked = metrics.pending()
    assert {m: s.count for m, s in peeked.items()} == {"Contribute": 2, "Win": 1}
    assert metrics.pending()["Contribute"].count == 2  # peeking leaves it in place

    drained = metrics.drain()
    assert {m: s.count for m, s in drained.items()} == {"Contribute": 2, "Win": 1}
    assert drained["Win"].error_count == 1
    assert drained["Contribute"].client_error_count == 1
    assert metrics.drain() == {}  # nothing new since
    assert metrics.pending() == {}

    clock.advance(2)
    metrics.record("Win", OK, 0.01)
    assert {m: s.count for m, s in metrics.drain().items()} == {"Win": 1}
    # The windows and the since-start aggregate are not touched by draining.
    assert metrics.summary()["total_requests"] == 4
    assert metrics.summary("5m")["total_requests"] == 4


def test_drained_histograms_merged_across_processes_give_exact_percentiles() -> None:
    """Summing bucket counts over minutes and processes is the histogram of all the calls:
    the same percentile as one process that saw them all, within the same bound."""
    rng = random.Random(3)
    clocks = [FakeClock(), FakeClock()]
    processes = [RequestMetrics(clock=c) for c in clocks]
    everything = RequestMetrics(clock=FakeClock())
    values: list[float] = []
    rollups: list[Rollup] = []
    for minute in range(5):
        for metrics, clock in zip(processes, clocks, strict=True):
            for _ in range(400):
                ms = rng.lognormvariate(math.log(4 + minute), 0.9)
                values.append(ms)
                metrics.record("Contribute", OK, ms / 1000)
                everything.record("Contribute", OK, ms / 1000)
                clock.advance(0.1)
            for method, stats in metrics.drain().items():
                start = datetime(2026, 1, 1, 0, minute, tzinfo=UTC)
                rollups.append(Rollup.of(method, stats, start, 60.0))

    merged = Stats()
    for rollup in rollups:  # what the database does: sum every bucket, min of min, ...
        merged.merge(rollup.stats())
    single = everything.pending()["Contribute"]
    assert merged.count == single.count == len(values)
    assert list(merged.hist) == list(single.hist)
    assert merged.sum_ms == pytest.approx(single.sum_ms)
    assert (merged.min_ms, merged.max_ms) == (single.min_ms, single.max_ms)
    for q in (0.5, 0.95, 0.99):
        estimate = merged.percentile(q)
        assert estimate == single.percentile(q)
        exact = exact_percentile(values, q)
        assert estimate is not None
        assert abs(estimate - exact) <= RELATIVE_ERROR * exact * (1 + 1e-9)


def test_a_rollup_round_trips_its_stats() -> None:
    stats = Stats()
    for code, ms in ((0, 1.5), (0, 3.0), (3, 0.2), (14, 900.0), (0, 70_000.0)):
        stats.add(code, ms, bucket_of(ms))
    rollup = Rollup.of("Win", stats, datetime(2026, 1, 1, tzinfo=UTC), 60.0)
    assert rollup.request_count == 5
    assert rollup.codes == stats.code_counts()
    assert (rollup.server_error_count, rollup.client_error_count) == (
        stats.error_count,
        stats.client_error_count,
    )
    assert len(rollup.hist_index) == len(rollup.hist_count) == 5
    back = rollup.stats()
    assert back.codes == stats.codes and list(back.hist) == list(stats.hist)
    assert (back.count, back.sum_ms, back.min_ms, back.max_ms) == (
        stats.count,
        stats.sum_ms,
        stats.min_ms,
        stats.max_ms,
    )


def test_stats_from_stored_parts_tolerate_unknown_codes_and_buckets() -> None:
    stats = Stats.from_parts(
        codes={"OK": 2, "SOMETHING_NEW": 1},
        sum_ms=3.0,
        min_ms=1.0,
        max_ms=1.0,
        hist=[(10, 1), (10_000, 2)],
    )
    assert stats.count == 3 and stats.error_count == 1  # folded into UNKNOWN
    assert sum(stats.hist) == 3


def test_summarize_has_the_shape_of_the_memory_summary() -> None:
    metrics = RequestMetrics(clock=FakeClock())
    metrics.record("Contribute", OK, 0.003)
    from_memory = metrics.summary("30d")
    from_parts = summarize(metrics.pending(), "30d", 10.0, 10.0, source="database")
    assert set(from_parts) == set(from_memory)
    assert from_memory["source"] == "memory" and from_parts["source"] == "database"
    assert set(from_parts["methods"]["Contribute"]) == set(from_memory["methods"]["Contribute"])
    assert from_parts["response_times"] == from_memory["response_times"]


def test_covers_is_true_once_the_process_has_seen_the_whole_period() -> None:
    clock = FakeClock()
    metrics = RequestMetrics(clock=clock)
    assert not metrics.covers("5m")
    clock.advance(300)
    assert metrics.covers("5m") and not metrics.covers("1h")
    clock.advance(30 * 86_400)
    assert metrics.covers("30d")


def test_sampler_config_reads_the_environment() -> None:
    settings = Settings.from_env(
        {"JACKPOT_SAMPLE_INTERVAL": "0.5", "JACKPOT_METRICS_RETENTION_DAYS": "7"}
    )
    config = sampler_config(settings.history)
    assert (config.interval, config.retention_days) == (0.5, 7.0)
    assert sampler_config(Settings.from_env({}).history) == SamplerConfig()
    assert SamplerConfig().interval == 60.0 and SamplerConfig().retention_days == 35.0
    with pytest.raises(ConfigError):
        Settings.from_env({"JACKPOT_SAMPLE_INTERVAL": "soon"})
    with pytest.raises(ValueError):
        sampler_config(Settings.from_env({"JACKPOT_SAMPLE_INTERVAL": "0"}).history)
    with pytest.raises(ValueError):
        SamplerConfig(interval=0)
    with pytest.raises(ValueError):
        SamplerConfig(retention_days=-1)


class DeadPool:
    """A pool whose database never answers."""

    max_size = 4

    def get_stats(self) -> dict[str, int]:
        return {"pool_size": 2, "requests_waiting": 1}

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:  # noqa: ASYNC109
        raise OSError("connection refused")
        yield  # pragma: no cover


async def test_the_buffer_stays_bounded_while_writes_fail() -> None:
    metrics = RequestMetrics()
    sampler = MetricsSampler(
        DeadPool(),  # type: ignore[arg-type]
        metrics,
        SamplerConfig(interval=1, buffer_max_rows=10),
        host="test",
        pid=1,
    )
    for _ in range(50):
        metrics.record("Contribute", OK, 0.001)
        metrics.record("Win", OK, 0.002)
        await sampler.tick()  # 3 rows a tick: the sample and two methods
        assert sampler.buffered_rows <= 10
    assert sampler.write_errors == 50
    assert sampler.buffered_rows == 9 and sampler.buffered_batches == 3
    assert sampler.dropped_rows == 150 - 9
    status = sampler.status()
    assert status["dropped_rows"] == 141 and status["buffered_rows"] == 9
    assert status["last_error"] == "OSError: connection refused"
    sample = sampler.take_sample().sample
    assert (sample.connection_count, sample.pool_waiting, sample.pool_max) == (2, 1, 4)
    assert sample.rss_bytes > 0 and 0 < sample.memory_usage < 100 and sample.cpu_usage >= 0


def test_parse_period() -> None:
    assert parse_period("30d") == timedelta(days=30)
    assert parse_period("24h") == timedelta(hours=24)
    assert parse_period("90m") == timedelta(minutes=90)
    assert parse_period("2w") == timedelta(days=14)
    for bad in ("", "30", "d", "-1d", "0d", "3y"):
        with pytest.raises(ValueError):
            parse_period(bad)


def test_sparkline_and_bars_scale_to_the_largest_value() -> None:
    assert sparkline([0, 1, 2, 4, 8]) == "▁▁▂▄█"
    assert sparkline([1, None, 1]) == "█ █"
    assert sparkline([0.0, 0.0]) == "▁▁"
    assert sparkline([1, 2], ascii_only=True) == "+@"
    assert bar(10, 10, 4) == "████"
    assert bar(5, 10, 4) == "██"
    assert bar(1, 10, 4) == "▍"
    assert bar(0, 10, 4) == ""
    assert bar(5, 10, 4, ascii_only=True) == "##"


def test_render_trend_prints_a_table_sparklines_and_bars() -> None:
    days = [
        TrendDay(
            day=date(2026, 11, 1),
            requests=1000,
            server_errors=2,
            error_rate=0.002,
            avg_ms=3.0,
            p95_ms=9.5,
            avg_cpu=10.0,
            avg_memory=1.5,
            avg_connections=4.0,
            samples=1440,
            processes=2,
        ),
        TrendDay(day=date(2026, 11, 3), requests=4000, error_rate=0.0, avg_ms=2.0, p95_ms=5.0),
    ]
    trend = Trend(
        period="30d",
        since=datetime(2026, 10, 5, tzinfo=UTC),
        until=datetime(2026, 11, 4, tzinfo=UTC),
        days=days,
        requests=5000,
        server_errors=2,
        client_errors=0,
        error_rate=0.0004,
        avg_ms=2.2,
        p95_ms=9.0,
        p99_ms=9.5,
    )
    text = render_trend(trend, width=20)
    lines = text.splitlines()
    assert lines[0].startswith("Trend over 30d")
    assert any(line.startswith("2026-11-01") and "1,000" in line for line in lines)
    assert any(line.startswith("total") and "5,000" in line for line in lines)
    # The gap day (11-02) is a blank in the sparkline and an empty bar.
    requests_line = next(line for line in lines if line.startswith("requests "))
    assert "▂ █" in requests_line
    assert "2026-11-03 " + "█" * 20 + " 4,000" in lines
    assert any(line.startswith("2026-11-02 ") and line.endswith(" 0") for line in lines)
    data = trend.as_dict()
    assert data["totals"]["requests"] == 5000 and data["days"][0]["day"] == "2026-11-01"

    empty = Trend("30d", trend.since, trend.until, [], 0, 0, 0, None, None, None, None)
    assert "no metrics history" in render_trend(empty)
