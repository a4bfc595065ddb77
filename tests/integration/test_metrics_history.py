"""Metrics history on real PostgreSQL: the sampler's rows, /metrics?period=30d across
restarts and replicas, a database outage, compaction, pruning, the trend, migration 0002."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import psycopg
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc
from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.adapters import history_store as store
from jackpot_grpc.adapters import migrations
from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from jackpot_grpc.history.sampler import MetricsSampler, SamplerConfig
from jackpot_grpc.history.trend import load_trend, render_trend
from jackpot_grpc.observability.history_records import Batch, Rollup, SystemSample
from jackpot_grpc.observability.metrics import RELATIVE_ERROR, RequestMetrics, Stats, bucket_of
from testkit.database import create_database, drop_database, public_tables, unique_name
from testkit.outage import database_outage

OK = grpc.StatusCode.OK

# The runbook's monthly capacity review, verbatim (but for trailing blanks).
CAPACITY_SQL = """
SELECT
    date_trunc('day', stat_timestamp) as day,
    avg(cpu_usage) as avg_cpu,
    avg(memory_usage) as avg_memory,
    avg(connection_count) as avg_connections
FROM system_metrics
WHERE stat_timestamp >= NOW() - INTERVAL '30 days'
GROUP BY day
ORDER BY day;"""


async def get_json(
    http: aiohttp.ClientSession, running: RunningServer, path: str
) -> tuple[int, Any]:
    async with http.get(f"http://127.0.0.1:{running.health_port}{path}") as response:
        return response.status, await response.json()


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not true within {within} s"
        await asyncio.sleep(0.1)


async def scalar(database_url: str, sql: str) -> Any:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(sql)
        row = await cursor.fetchone()
    assert row is not None
    return row[0]


def sampler_of(running: RunningServer) -> MetricsSampler:
    assert running.sampler is not None
    return running.sampler


async def calls(running: RunningServer, contribute: int = 0, pools: int = 0, bad: int = 0) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
        for _ in range(contribute):
            await stub.Contribute(pb.ContributeRequest(game_id="slots", wager_amount=1000))
        for _ in range(pools):
            await stub.GetPools(pb.GetPoolsRequest())
        for _ in range(bad):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Contribute(pb.ContributeRequest(game_id="slots", wager_amount=0))


def counts(summary: dict[str, Any]) -> dict[str, int]:
    return {m: s["total_requests"] for m, s in summary["methods"].items()}


async def test_the_runbook_capacity_query_reads_the_sampled_rows(
    settings: Settings, database_url: str
) -> None:
    fast = dataclasses.replace(
        settings, history=dataclasses.replace(settings.history, sample_interval=0.2)
    )
    running = await start_server(fast, database_url, port=0)
    try:
        assert sampler_of(running).config.interval == 0.2
        await calls(running, pools=2)
        await eventually(
            lambda: _at_least(database_url, "SELECT count(*) FROM system_metrics", 3), within=5
        )
    finally:
        await running.stop(grace=1.0)

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(CAPACITY_SQL)
        days = await cursor.fetchall()
        cursor = await conn.execute("SELECT DISTINCT host, pid, pool_max FROM system_metrics")
        processes = await cursor.fetchall()
        cursor = await conn.execute("SELECT sum(request_count) FROM request_rollups")
        requests = await cursor.fetchone()
    assert 1 <= len(days) <= 2  # 2 only when the test straddles midnight
    for day, avg_cpu, avg_memory, avg_connections in days:
        assert day.hour == day.minute == 0
        assert avg_cpu >= 0
        assert 0 < avg_memory < 100
        assert 1 <= avg_connections <= settings.database.pool_max_size
    assert processes == [(socket.gethostname(), os.getpid(), settings.database.pool_max_size)]
    assert requests == (2,)


async def _at_least(database_url: str, sql: str, n: int) -> bool:
    return int(await scalar(database_url, sql)) >= n


async def test_metrics_30d_still_count_the_calls_made_before_a_restart(
    settings: Settings, database_url: str, http: aiohttp.ClientSession
) -> None:
    first = await start_server(settings, database_url, port=0)
    try:
        await calls(first, contribute=5, pools=3, bad=1)
    finally:
        await first.stop(grace=1.0)  # writes the last, partial minute

    second = await start_server(settings, database_url, port=0)
    try:
        status, month = await get_json(http, second, "/metrics?period=30d")
        assert status == 200
        assert month["source"] == "database" and month["period"] == "30d"
        assert month["total_requests"] == 9
        assert counts(month) == {"Contribute": 6, "GetPools": 3}
        contribute = month["methods"]["Contribute"]
        assert contribute["status_codes"] == {"OK": 5, "INVALID_ARGUMENT": 1}
        assert (contribute["client_error_count"], contribute["error_count"]) == (1, 0)
        times = month["response_times"]
        assert 0 < times["min"] <= times["p50"] <= times["p95"] <= times["p99"] <= times["max"]
        assert month["history"]["dropped_rows"] == 0
        assert 0 < month["window_seconds"] <= 30 * 86_400

        _, since_start = await get_json(http, second, "/metrics")
        assert (since_start["source"], since_start["total_requests"]) == ("memory", 0)

        # This process's calls count before any flush: the not-yet-written minute.
        await calls(second, pools=1)
        _, month = await get_json(http, second, "/metrics?period=30d")
        assert counts(month) == {"Contribute": 6, "GetPools": 4}
        _, recent = await get_json(http, second, "/metrics?period=5m")  # uptime < 5 min
        assert (recent["source"], recent["total_requests"]) == ("database", 10)
    finally:
        await second.stop(grace=1.0)


async def test_two_servers_on_one_database_add_up(
    settings: Settings, database_url: str, http: aiohttp.ClientSession
) -> None:
    a = await start_server(settings, database_url, port=0)
    b = await start_server(settings, database_url, port=0)
    try:
        await calls(a, contribute=3)
        await calls(b, contribute=1, pools=2)
        await sampler_of(a).tick()
        await sampler_of(b).tick()
        for running in (a, b):
            _, month = await get_json(http, running, "/metrics?period=30d")
            assert month["source"] == "database"
            assert counts(month) == {"Contribute": 4, "GetPools": 2}

        await calls(a, pools=1)  # not flushed yet: a sees it, b does not
        _, seen_by_a = await get_json(http, a, "/metrics?period=24h")
        _, seen_by_b = await get_json(http, b, "/metrics?period=24h")
        assert (seen_by_a["total_requests"], seen_by_b["total_requests"]) == (7, 6)
        await sampler_of(a).tick()
        _, seen_by_b = await get_json(http, b, "/metrics?period=24h")
        assert seen_by_b["total_requests"] == 7

        # Each process alone, on request; the fleet over a window a process has seen.
        _, alone = await get_json(http, b, "/metrics?period=30d&source=memory")
        assert (alone["source"], alone["total_requests"]) == ("memory", 3)
        _, fleet = await get_json(http, b, "/metrics?period=5m&source=database")
        assert (fleet["source"], fleet["total_requests"]) == ("database", 7)
        for bad in ("/metrics?source=database", "/metrics?period=30d&source=disk"):
            status, refusal = await get_json(http, b, bad)
            assert (status, refusal["parameter"]) == (400, "source")
    finally:
        await a.stop(grace=1.0)
        await b.stop(grace=1.0)


async def test_a_database_outage_keeps_the_buffer_bounded_and_writes_resume(
    settings: Settings,
    database_url: str,
    admin_url: str,
    http: aiohttp.ClientSession,
) -> None:
    running = await start_server(settings, database_url, port=0)
    sampler = sampler_of(running)
    await sampler.stop(final_flush=False)  # the test ticks by hand from here
    sampler.config = dataclasses.replace(
        sampler.config, buffer_max_rows=4, write_timeout=0.3, read_timeout=0.5
    )
    try:
        await calls(running, pools=2)
        await sampler.tick()
        assert (sampler.written_rows, sampler.buffered_rows) == (2, 0)

        async with database_outage(admin_url, database_url):
            for _ in range(6):  # one call a tick: each tick buffers 2 rows
                running.metrics.record("GetPools", OK, 0.001)
                await sampler.tick()
                assert sampler.buffered_rows <= 4
            assert (sampler.buffered_rows, sampler.dropped_rows) == (4, 8)
            assert sampler.write_errors >= 6
            assert sampler.status()["writes"] == "failing"

            status, month = await get_json(http, running, "/metrics?period=30d")
            assert status == 200
            assert month["source"] == "memory" and month["history_error"]
            async with http.get(f"http://127.0.0.1:{running.health_port}/metrics/prometheus") as r:
                text = await r.text()
            assert "jackpot_metrics_history_dropped_rows_total 8.0" in text
            assert "jackpot_metrics_history_buffered_rows 4.0" in text

        async def written() -> bool:  # no new sample: it would push an old one out
            return await sampler.flush()

        await eventually(written, within=10)
        assert sampler.status()["last_write_at"] is not None
        # Stored: the 2 calls before the outage and the last 2 buffered during it; the
        # 4 in the dropped batches are gone, and counted as such.
        status, month = await get_json(http, running, "/metrics?period=30d")
        assert (status, month["source"], month["total_requests"]) == (200, "database", 4)
        assert month["history"]["dropped_rows"] == 8
        assert month["history"]["writes"] == "ok"
    finally:
        await running.stop(grace=1.0)


def _sample(at: datetime, host: str = "h", pid: int = 1, cpu: float = 10.0) -> SystemSample:
    return SystemSample(at, host, pid, cpu, 1.0, 1 << 20, 2, 0, 8)


def _rollup(at: datetime, method: str, latencies_ms: list[float], codes: list[int]) -> Rollup:
    stats = Stats()
    for ms, code in zip(latencies_ms, codes, strict=True):
        stats.add(code, ms, bucket_of(ms))
    return Rollup.of(method, stats, at, 60.0)


async def _write(pool: AsyncConnectionPool[Any], batches: list[Batch]) -> None:
    async with pool.connection() as conn:
        await store.write_batches(conn, batches, statement_timeout=5.0, commit_timeout=5.0)


async def test_pruning_removes_only_rows_older_than_the_retention(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    now = time.time()
    sampler = MetricsSampler(
        pool, RequestMetrics(), SamplerConfig(retention_days=35, prune_batch=3)
    )
    ages_days = [40.0] * 7 + [35.01] * 2 + [34.99] * 3 + [1.0] * 2
    batches = [
        Batch(
            _sample(datetime.fromtimestamp(now - age * 86_400 + i, UTC)),
            (_rollup(datetime.fromtimestamp(now - age * 86_400, UTC), "Win", [1.0], [0]),),
        )
        for i, age in enumerate(ages_days)
    ]
    await _write(pool, batches)

    result = await sampler.prune(now)
    assert result.complete
    assert result.deleted == {"system_metrics": 9, "request_rollups": 9, "ledger_audits": 0}
    async with pool.connection() as conn:
        for table in (store.SYSTEM_TABLE, store.ROLLUP_TABLE):
            column = store.TIME_COLUMNS[table]
            cursor = await conn.execute(f"SELECT count(*), min({column}) FROM {table}")
            row = await cursor.fetchone()
            assert row is not None
            assert row[0] == 5
            assert row[1] >= datetime.fromtimestamp(now - 35 * 86_400, UTC)
    assert (await sampler.prune(now)).deleted == dict.fromkeys(store.TIME_COLUMNS, 0)
    assert sampler.pruned_rows == 18


async def test_compaction_merges_finished_hours_exactly(pool: AsyncConnectionPool[Any]) -> None:
    now = time.time()
    hour = now - now % 3600 - 3 * 3600  # a finished hour, three hours ago
    sampler = MetricsSampler(pool, RequestMetrics(), SamplerConfig())
    batches = []
    for minute in range(60):
        for pid in (1, 2):  # two processes
            at = datetime.fromtimestamp(hour + minute * 60, UTC)
            batches.append(
                Batch(
                    _sample(at, pid=pid),
                    (
                        _rollup(at, "Contribute", [1.0 + minute, 2.5, 0.3 * pid], [0, 0, 3]),
                        _rollup(at, "Win", [40.0 + pid], [14]),
                    ),
                )
            )
    recent = datetime.fromtimestamp(now - 60, UTC)
    batches.append(Batch(_sample(recent), (_rollup(recent, "Win", [5.0], [0]),)))
    await _write(pool, batches)
    since = datetime.fromtimestamp(hour - 3600, UTC)
    before, _ = await sampler.read_window(since)

    result = await sampler.compact(now)
    assert (result.hours, result.merged, result.added, result.complete) == (1, 240, 2, True)
    after, earliest = await sampler.read_window(since)
    assert earliest == datetime.fromtimestamp(hour, UTC)
    for method in ("Contribute", "Win"):
        b, a = before[method], after[method]
        assert (a.count, a.codes, list(a.hist)) == (b.count, b.codes, list(b.hist))
        assert (a.min_ms, a.max_ms) == (b.min_ms, b.max_ms)
        assert a.sum_ms == pytest.approx(b.sum_ms)
        assert a.percentile(0.95) == b.percentile(0.95)
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT compacted, count(*), count(host) FROM request_rollups GROUP BY 1 ORDER BY 1"
        )
        assert await cursor.fetchall() == [(False, 1, 1), (True, 2, 0)]  # the recent row stays

    assert (await sampler.compact(now)).hours == 0
    late = datetime.fromtimestamp(hour + 30, UTC)  # a straggler for the compacted hour
    await _write(pool, [Batch(_sample(late, pid=3), (_rollup(late, "Win", [7.0], [0]),))])
    assert (await sampler.compact(now)).merged == 1
    after, _ = await sampler.read_window(since)
    assert after["Win"].count == before["Win"].count + 1


async def test_the_trend_reports_each_day_from_the_history(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    batches = []
    latencies: dict[int, list[float]] = {}
    for days_ago in (2, 0):
        day = today - timedelta(days=days_ago)
        latencies[days_ago] = [float(ms) for ms in range(1, 101)]
        for minute, cpu in ((0, 10.0), (1, 30.0)):
            at = day + timedelta(minutes=minute)
            half = latencies[days_ago][minute * 50 : minute * 50 + 50]
            codes = [14] + [0] * 49 if minute == 0 else [3] + [0] * 49
            batches.append(Batch(_sample(at, cpu=cpu), (_rollup(at, "Contribute", half, codes),)))
    await _write(pool, batches)

    with psycopg.connect(database_url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        trend = load_trend(conn, "30d")
    assert [d.day for d in trend.days] == [(today - timedelta(days=2)).date(), today.date()]
    for figures in trend.days:
        assert (figures.requests, figures.server_errors, figures.client_errors) == (100, 1, 1)
        assert figures.error_rate == pytest.approx(0.01)
        assert figures.avg_ms == pytest.approx(50.5)
        assert figures.p95_ms is not None and abs(figures.p95_ms - 95) <= RELATIVE_ERROR * 95
        assert (figures.avg_cpu, figures.max_cpu, figures.avg_connections) == (20.0, 30.0, 2.0)
        assert (figures.samples, figures.processes) == (2, 1)
    assert (trend.requests, trend.server_errors, trend.error_rate) == (200, 2, 0.01)
    text = render_trend(trend)
    assert "total" in text and "requests per day" in text
    assert len([line for line in text.splitlines() if line.startswith(str(today.date()))]) == 2


def indexes(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename IN"
            " ('system_metrics', 'request_rollups')"
        ).fetchall()
    return {r[0] for r in rows}


def test_migration_0002_upgrades_and_downgrades(admin_url: str) -> None:
    name = unique_name("jackpot_history_migrate")
    url = create_database(admin_url, name)
    history = {"system_metrics", "request_rollups"}
    try:
        migrations.upgrade(url, "0001")
        assert not public_tables(url) & history
        migrations.upgrade(url, "0002")
        assert history <= public_tables(url) and "jackpots" in public_tables(url)
        assert indexes(url) == {
            "system_metrics_stat_timestamp",
            "request_rollups_started_at",
            "request_rollups_uncompacted",
        }
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]
            conn.execute(CAPACITY_SQL).fetchall()  # the runbook's query runs on the schema

        migrations.downgrade(url, "0001")
        assert not public_tables(url) & history and "jackpots" in public_tables(url)
        migrations.upgrade(url)
        assert history <= public_tables(url)
    finally:
        drop_database(admin_url, name)
