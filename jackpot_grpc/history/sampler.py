"""The metrics sampler: a background task that keeps the metrics history of this process.
(One class and its buffer; long because its failure handling is spelled out.)

Every `interval` seconds (JACKPOT_SAMPLE_INTERVAL, default 60; ticks are aligned on
multiples of the interval in wall-clock time, so with 60 s a row covers a calendar
minute) it

1. drains the request metrics' per-method deltas (RequestMetrics.drain: an O(1) swap per
   method) and samples the process (CPU, memory, pool) — synchronous and sub-millisecond,
   the only part that runs between two calls on the event loop;
2. appends both, as one batch, to a bounded buffer: at most `buffer_max_rows` rows; when
   full, the oldest batches are dropped and counted (`dropped_rows`), so a database
   outage never grows memory without bound;
3. writes the buffer through the service's pool, each transaction bounded by
   `write_timeout` (waiting for a connection included) and a statement timeout; on any
   failure the rows stay buffered and the next tick retries;
4. compacts, every `compact_every` seconds, each finished hour (ended `compact_after`
   ago, so late writers are in) into one row per method — every replica may try, an
   advisory lock lets one work at a time;
5. prunes, every `prune_every` seconds (hourly), rows older than `retention_days`
   (JACKPOT_METRICS_RETENTION_DAYS, default 35; the ledger audits' results too, but for
   the newest) in batches of `prune_batch` rows, each its own short transaction — an
   advisory lock lets one replica prune at a time; the others leave it to that one until
   their next prune is due. Compaction and pruning share a time budget per tick; what is
   left is done at the next tick.

`stop()` (RunningServer.stop, before the pool closes) drains and writes a last batch,
so a restart loses nothing that was recorded.

/metrics windows longer than this process's uptime read `window_summary`: every process's
stored rollups since the window's start, summed bucket by bucket (see
adapters.history_store), plus this process's not-yet-stored deltas (the pending metrics and
the buffer). Other processes' last unflushed interval (at most one tick) is not visible
until they write it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psutil
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from jackpot_grpc.adapters import history_store as store
from jackpot_grpc.adapters.database import DbPool
from jackpot_grpc.config import HistorySettings
from jackpot_grpc.observability.history_records import Batch, Rollup, SystemSample
from jackpot_grpc.observability.metrics import (
    PERIODS,
    RequestMetrics,
    Stats,
    UnknownPeriod,
    summarize,
)
from jackpot_grpc.runtime.cgroup_memory import memory_limit, memory_percent
from jackpot_grpc.text.messages import first_line

log = logging.getLogger(__name__)


DEFAULT_INTERVAL = 60.0
DEFAULT_RETENTION_DAYS = 35.0


class HistoryUnavailable(RuntimeError):
    """The stored history could not be read (database down or too slow)."""


@dataclass(frozen=True)
class SamplerConfig:
    interval: float = DEFAULT_INTERVAL  # seconds between ticks
    retention_days: float = DEFAULT_RETENTION_DAYS
    buffer_max_rows: int = 4096  # ~10 h of a 6-method service at one tick a minute
    # One write transaction's bound: the connection wait, each statement, and the COMMIT's
    # answer (adapters.commit_bound); the whole transaction's backstop is twice that.
    write_timeout: float = 2.0
    read_timeout: float = 3.0  # one /metrics window read
    write_chunk_rows: int = 512  # rows per write transaction when catching up
    compact_every: float = 900.0
    # An hour is compacted once it ended this long ago: late writers are in, and the last
    # hour is always in minute rows, so a 1h window read from the database is minute-exact.
    compact_after: float = 4200.0
    prune_every: float = 3600.0
    prune_batch: int = 1000
    maintenance_budget: float = 5.0  # seconds of compaction and pruning per tick at most

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"sample interval must be positive, got {self.interval!r}")
        if not self.retention_days >= 0:
            raise ValueError(f"retention must be at least 0 days, got {self.retention_days!r}")
        if self.buffer_max_rows < 1 or self.prune_batch < 1 or self.write_chunk_rows < 1:
            raise ValueError("buffer_max_rows, prune_batch and write_chunk_rows must be >= 1")


def sampler_config(history: HistorySettings) -> SamplerConfig:
    return SamplerConfig(interval=history.sample_interval, retention_days=history.retention_days)


@dataclass(frozen=True)
class PruneResult:
    deleted: dict[str, int]
    complete: bool  # False: the budget ran out; the rest goes at the next tick


@dataclass(frozen=True)
class CompactResult:
    hours: int
    merged: int  # rows merged away
    added: int  # compacted rows written
    complete: bool  # False: the budget ran out, or another process holds the lock


def _error(exc: BaseException) -> str:
    text = first_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class MetricsSampler:
    """Samples, buffers, writes and prunes the metrics history; reads it for /metrics.

    Runs on the event loop. Also a Prometheus collector (buffer, drops, writes, errors).
    """

    def __init__(
        self,
        db_pool: DbPool,
        metrics: RequestMetrics,
        config: SamplerConfig | None = None,
        *,
        host: str | None = None,
        pid: int | None = None,
        wall_clock: Callable[[], float] = time.time,
        side_db_pool: DbPool | None = None,
    ) -> None:
        self.db_pool = db_pool
        # /metrics?period= reads (whole windows of history) run here: the server passes
        # its small on-demand pool, so they never take a connection calls need.
        self.side_db_pool = db_pool if side_db_pool is None else side_db_pool
        self.metrics = metrics
        self.config = SamplerConfig() if config is None else config
        self.host = socket.gethostname() if host is None else host
        self.pid = os.getpid() if pid is None else pid
        self._wall = wall_clock
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # the first reading only sets the baseline
        self._buffer: deque[Batch] = deque()
        self._buffered_rows = 0
        self._interval_start: float = self._wall()  # start of the undrained interval
        self.started_at = self._interval_start
        # Seqlock for readers of "stored + not yet stored": `_idle` is clear while a
        # write is in flight, `_generation` counts the writes that committed.
        self._idle = asyncio.Event()
        self._idle.set()
        self._generation = 0
        self._next_prune = 0.0  # monotonic; 0: at the first tick
        self._next_compact = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._failing = False
        # Figures, reported by status() and collect().
        self.ticks = 0
        self.written_rows = 0
        self.dropped_rows = 0
        self.dropped_batches = 0
        self.write_errors = 0
        self.pruned_rows = 0
        self.compacted_rows = 0
        self.last_error: str | None = None
        self.last_write_at: float | None = None
        self.last_sample_seconds: float | None = None  # the on-loop part of a tick
        self.last_write_seconds: float | None = None

    # --- sampling ----------------------------------------------------------------------

    def _system_sample(self, at: float) -> SystemSample:
        process = self._process
        with process.oneshot():
            cpu = float(process.cpu_percent(None))
            rss = int(process.memory_info().rss)
        memory = memory_percent(rss, memory_limit())  # of the cgroup's limit, if any
        stats = self.db_pool.get_stats()
        return SystemSample(
            stat_timestamp=_utc(at),
            host=self.host,
            pid=self.pid,
            cpu_usage=round(cpu, 3),
            memory_usage=round(memory, 4),
            rss_bytes=rss,
            connection_count=int(stats.get("pool_size", 0)),
            pool_waiting=int(stats.get("requests_waiting", 0)),
            pool_max=int(self.db_pool.max_size),
        )

    def take_sample(self) -> Batch:
        """Drain the request deltas and sample the process into one buffered batch."""
        started = time.perf_counter()
        now = self._wall()
        drained = self.metrics.drain()
        interval_start = self._interval_start
        self._interval_start = now
        begins = _utc(interval_start)
        seconds = max(now - interval_start, 0.0)
        rollups = tuple(
            Rollup.of(method, stats, begins, seconds) for method, stats in sorted(drained.items())
        )
        batch = Batch(self._system_sample(now), rollups)
        self._buffer.append(batch)
        self._buffered_rows += batch.rows
        while self._buffered_rows > self.config.buffer_max_rows and self._buffer:
            oldest = self._buffer.popleft()
            self._buffered_rows -= oldest.rows
            self.dropped_rows += oldest.rows
            self.dropped_batches += 1
        self.last_sample_seconds = time.perf_counter() - started
        return batch

    @property
    def buffered_rows(self) -> int:
        return self._buffered_rows

    @property
    def buffered_batches(self) -> int:
        return len(self._buffer)

    # --- writing -----------------------------------------------------------------------

    def _chunk(self) -> list[Batch]:
        chunk: list[Batch] = []
        rows = 0
        for batch in self._buffer:
            if chunk and rows + batch.rows > self.config.write_chunk_rows:
                break
            chunk.append(batch)
            rows += batch.rows
        return chunk

    async def flush(self) -> bool:
        """Write the buffer, oldest first; True when it is empty afterwards.

        One flush at a time (a tick, a test's tick and the final flush may overlap)."""
        async with self._flush_lock:
            return await self._flush()

    async def _flush(self) -> bool:
        started = time.perf_counter()
        timeout = self.config.write_timeout
        while self._buffer:
            chunk = self._chunk()
            self._idle.clear()
            try:
                async with asyncio.timeout(2 * timeout):
                    async with self.db_pool.connection(timeout=timeout) as conn:
                        written = await store.write_batches(
                            conn, chunk, statement_timeout=timeout, commit_timeout=timeout
                        )
            except Exception as exc:
                self.write_errors += 1
                self.last_error = _error(exc)
                if isinstance(exc, TimeoutError) and not str(exc):
                    self.last_error = f"TimeoutError: no write within {timeout:g} s"
                if not self._failing:
                    log.warning(
                        "metrics history: write failed, keeping %d rows buffered (%s)",
                        self._buffered_rows,
                        self.last_error,
                    )
                self._failing = True
                return False
            else:
                # Committed: out of the buffer before any reader looks at it again.
                for batch in chunk:
                    if self._buffer and self._buffer[0] is batch:
                        self._buffer.popleft()
                        self._buffered_rows -= batch.rows
                self._generation += 1
            finally:
                self._idle.set()
            self.written_rows += sum(b.rows for b in written)
            self.last_write_at = self._wall()
            if self._failing:
                log.info(
                    "metrics history: writes resumed (%d rows dropped so far)", self.dropped_rows
                )
                self._failing = False
        self.last_write_seconds = time.perf_counter() - started
        return True

    # --- pruning -----------------------------------------------------------------------

    async def compact(
        self, now: float | None = None, deadline: float | None = None
    ) -> CompactResult:
        """Compact every finished hour (ended compact_after ago), oldest first."""
        now = self._wall() if now is None else now
        ready = now - self.config.compact_after
        before = _utc(ready - ready % store.COMPACT_SECONDS)
        if deadline is None:
            deadline = time.monotonic() + self.config.maintenance_budget
        timeout = self.config.write_timeout
        hours = merged = added = 0
        while time.monotonic() < deadline and not self._stopping.is_set():
            async with asyncio.timeout(2 * timeout):
                async with self.db_pool.connection(timeout=timeout) as conn:
                    done = await store.compact_oldest_hour(
                        conn, before, statement_timeout=timeout, commit_timeout=timeout
                    )
            if done is None:
                return CompactResult(hours, merged, added, complete=True)
            hours += 1
            merged += done.merged
            added += done.added
            self.compacted_rows += done.merged
        return CompactResult(hours, merged, added, complete=False)

    async def prune(self, now: float | None = None, deadline: float | None = None) -> PruneResult:
        """Delete rows older than the retention, in small batches, within the budget."""
        cutoff = _utc((self._wall() if now is None else now) - self.config.retention_days * 86_400)
        if deadline is None:
            deadline = time.monotonic() + self.config.maintenance_budget
        timeout = self.config.write_timeout
        deleted = dict.fromkeys(store.TIME_COLUMNS, 0)
        for table in store.TIME_COLUMNS:
            while True:
                if time.monotonic() >= deadline or self._stopping.is_set():
                    return PruneResult(deleted, complete=False)
                async with asyncio.timeout(2 * timeout):
                    async with self.db_pool.connection(timeout=timeout) as conn:
                        n = await store.prune_batch(
                            conn,
                            table,
                            cutoff,
                            self.config.prune_batch,
                            statement_timeout=timeout,
                            commit_timeout=timeout,
                        )
                if n is None:  # another replica is pruning: its turn
                    return PruneResult(deleted, complete=True)
                deleted[table] += n
                self.pruned_rows += n
                if n < self.config.prune_batch:
                    break
        return PruneResult(deleted, complete=True)

    # --- the task ----------------------------------------------------------------------

    async def tick(self) -> None:
        """One sample and write; a prune when one is due. Never raises for a database fault."""
        self.ticks += 1
        self.take_sample()
        if not await self.flush():
            return  # the database is not answering: no maintenance now
        await self.maintain()

    async def maintain(self) -> None:
        """Compaction and pruning when due, within one time budget; never raises. A failed
        run is retried at its next due time, not at every tick."""
        deadline = time.monotonic() + self.config.maintenance_budget
        if time.monotonic() >= self._next_compact:
            try:
                compacted = await self.compact(deadline=deadline)
            except Exception as exc:
                self._next_compact = time.monotonic() + self.config.compact_every
                self.last_error = _error(exc)
                log.warning("metrics history: compaction failed (%s)", self.last_error)
            else:
                if compacted.complete:
                    self._next_compact = time.monotonic() + self.config.compact_every
                if compacted.hours:
                    log.info(
                        "metrics history: compacted %d hour(s), %d rows into %d",
                        compacted.hours,
                        compacted.merged,
                        compacted.added,
                    )
        if time.monotonic() >= self._next_prune:
            try:
                pruned = await self.prune(deadline=deadline)
            except Exception as exc:
                self._next_prune = time.monotonic() + self.config.prune_every
                self.last_error = _error(exc)
                log.warning("metrics history: prune failed (%s)", self.last_error)
            else:
                if pruned.complete:
                    self._next_prune = time.monotonic() + self.config.prune_every
                if any(pruned.deleted.values()):
                    log.info("metrics history: pruned %s", pruned.deleted)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="metrics-history-sampler")

    async def _run(self) -> None:
        interval = self.config.interval
        while not self._stopping.is_set():
            delay = interval - (self._wall() % interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            try:
                await self.tick()
            except Exception:  # a bug must not end the sampling for the process's life
                log.exception("metrics history: tick failed")

    async def stop(self, final_flush: bool = True) -> None:
        """Stop ticking; then drain and write what is left (bounded by write_timeout)."""
        self._stopping.set()
        if self._task is not None:
            task, self._task = self._task, None
            try:
                await asyncio.wait_for(asyncio.shield(task), self.config.write_timeout + 1.0)
            except TimeoutError:
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)  # bounded: see jobs/periodic.py
        if final_flush:
            self.take_sample()
            if not await self.flush():
                log.warning(
                    "metrics history: %d rows not written at shutdown (%s)",
                    self._buffered_rows,
                    self.last_error,
                )

    # --- reading -----------------------------------------------------------------------

    def _unflushed(self, since: datetime) -> tuple[dict[str, Stats], datetime | None]:
        """This process's deltas not stored yet (buffer and pending metrics), per method."""
        per_method: dict[str, Stats] = {}
        earliest: datetime | None = None

        def add(method: str, stats: Stats, begins: datetime) -> None:
            nonlocal earliest
            into = per_method.get(method)
            if into is None:
                into = per_method[method] = Stats()
            into.merge(stats)
            earliest = begins if earliest is None else min(earliest, begins)

        for batch in self._buffer:
            for rollup in batch.rollups:
                if rollup.started_at >= since:
                    add(rollup.method, rollup.stats(), rollup.started_at)
        pending_start = _utc(self._interval_start)
        for method, stats in self.metrics.pending().items():
            add(method, stats, pending_start)
        return per_method, earliest

    async def read_window(self, since: datetime) -> tuple[dict[str, Stats], datetime | None]:
        """Stored rollups of every process since `since`, plus this process's unstored
        deltas: each call counted once, whatever the sampler writes meanwhile."""
        timeout = self.config.read_timeout
        try:
            async with asyncio.timeout(timeout):
                for _ in range(5):
                    await self._idle.wait()  # no write in flight
                    generation = self._generation
                    local, local_earliest = self._unflushed(since)
                    async with self.side_db_pool.connection(timeout=timeout) as conn:
                        read = await store.read_window(conn, since, statement_timeout=timeout)
                    if self._idle.is_set() and self._generation == generation:
                        break
                else:
                    raise HistoryUnavailable("history writes kept overlapping the read")
        except HistoryUnavailable:
            raise
        except Exception as exc:
            raise HistoryUnavailable(_error(exc)) from exc
        per_method = read.per_method
        for method, stats in local.items():
            per_method.setdefault(method, Stats()).merge(stats)
        candidates = [t for t in (read.earliest, local_earliest) if t is not None]
        return per_method, min(candidates) if candidates else None

    async def window_summary(self, period: str) -> dict[str, Any]:
        """The /metrics JSON for `period` from the stored history (source "database")."""
        window = PERIODS.get(period)
        if window is None:
            raise UnknownPeriod(period)
        now = self._wall()
        since = now - window.seconds
        per_method, earliest = await self.read_window(_utc(since))
        # The span the rows cover: from the first whole row inside the window (minute
        # rows for the last hour or so, compacted hours before), so throughput is exact.
        first = earliest.timestamp() if earliest is not None else self._interval_start
        seconds = now - max(since, first)
        summary = summarize(per_method, period, seconds, self.metrics.uptime(), source="database")
        summary["history"] = self.status()
        return summary

    # --- reporting ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "writes": "failing" if self._failing else "ok",
            "interval_seconds": self.config.interval,
            "retention_days": self.config.retention_days,
            "buffered_rows": self._buffered_rows,
            "buffer_max_rows": self.config.buffer_max_rows,
            "dropped_rows": self.dropped_rows,
            "written_rows": self.written_rows,
            "write_errors": self.write_errors,
            "last_write_at": None
            if self.last_write_at is None
            else _utc(self.last_write_at).isoformat(),
            "last_error": self.last_error,
        }

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "jackpot_metrics_history_buffered_rows",
            "Metrics-history rows waiting to be written to the database.",
            value=self._buffered_rows,
        )
        for name, help_text, value in (
            ("written_rows", "Metrics-history rows written.", self.written_rows),
            ("dropped_rows", "Metrics-history rows dropped: buffer full.", self.dropped_rows),
            ("write_errors", "Metrics-history writes that failed.", self.write_errors),
            ("pruned_rows", "Metrics-history rows pruned by age.", self.pruned_rows),
            (
                "compacted_rows",
                "Metrics-history rows merged into hourly rows.",
                self.compacted_rows,
            ),
        ):
            yield CounterMetricFamily(f"jackpot_metrics_history_{name}", help_text, value=value)
