"""The metrics history's values: samples, rollups, a sampler tick's batch, reads' results.

Plain data and arithmetic; jackpot_grpc.adapters.history_store reads and writes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from jackpot_grpc.observability.metrics import Stats


@dataclass(frozen=True, slots=True)
class SystemSample:
    """One row of system_metrics: the process's resources at `stat_timestamp`.

    cpu_usage: percent of one CPU the process used since its previous sample (as `top`
    shows it, so above 100 when it kept more than one core busy).
    memory_usage: the process's resident memory (rss_bytes) as a percent of its cgroup's
    memory limit (MemoryMax=, a container's limit), or of the machine's physical memory
    when it has none (jackpot_grpc.runtime.cgroup_memory).
    connection_count: connections open in the process's database pool.
    """

    stat_timestamp: datetime
    host: str
    pid: int
    cpu_usage: float
    memory_usage: float
    rss_bytes: int
    connection_count: int
    pool_waiting: int
    pool_max: int


@dataclass(frozen=True, slots=True)
class Rollup:
    """One row of request_rollups: one method's calls over [started_at, +seconds)."""

    started_at: datetime
    seconds: float
    method: str
    request_count: int
    server_error_count: int
    client_error_count: int
    codes: dict[str, int]
    sum_ms: float
    min_ms: float
    max_ms: float
    hist_index: list[int]
    hist_count: list[int]

    @classmethod
    def of(cls, method: str, stats: Stats, started_at: datetime, seconds: float) -> Rollup:
        indexes, counts = stats.sparse_histogram()
        return cls(
            started_at=started_at,
            seconds=seconds,
            method=method,
            request_count=stats.count,
            server_error_count=stats.error_count,
            client_error_count=stats.client_error_count,
            codes=stats.code_counts(),
            sum_ms=stats.sum_ms,
            min_ms=stats.min_ms,
            max_ms=stats.max_ms,
            hist_index=indexes,
            hist_count=counts,
        )

    def stats(self) -> Stats:
        return Stats.from_parts(
            codes=self.codes,
            sum_ms=self.sum_ms,
            min_ms=self.min_ms,
            max_ms=self.max_ms,
            hist=zip(self.hist_index, self.hist_count, strict=True),
        )


@dataclass(frozen=True, slots=True)
class Batch:
    """What one sampler tick produced: one system sample and a rollup per active method.

    (stat_timestamp, host, pid) of the sample identifies the batch: a retry after a
    failure whose outcome is unknown (the connection died during COMMIT) skips batches
    already stored, so a batch is written once.
    """

    sample: SystemSample
    rollups: tuple[Rollup, ...] = field(default=())

    @property
    def rows(self) -> int:
        return 1 + len(self.rollups)


@dataclass(frozen=True)
class WindowRead:
    """Per-method stats of every stored rollup since a time, and the oldest row's start."""

    per_method: dict[str, Stats]
    earliest: datetime | None


@dataclass(frozen=True)
class Compaction:
    hour: datetime
    merged: int  # rows deleted
    added: int  # compacted rows inserted (one per method)


@dataclass(frozen=True)
class DayRequests:
    day: datetime
    requests: int
    server_errors: int
    client_errors: int
    # The day's count, latency sum, min, max and histogram (for avg and percentiles);
    # status codes are not read here, so use the error counts above, not latency's.
    latency: Stats


def sum_stats(parts: Iterable[Stats]) -> Stats:
    total = Stats()
    for stats in parts:
        total.merge(stats)
    return total
