"""In-process request metrics: windowed latency percentiles, error rates and throughput.

One concept (the histogram, its windows and the gRPC counters read from them) kept in one
module so the error bound below is argued in one place; hence its length.

Every RPC is recorded once (method, final status code, handler latency) in O(1): per
method, into one slot of each window's ring and into a since-start aggregate. Memory is
bounded: each ring has a fixed number of slots, each slot a fixed-size histogram.

Latency histogram: log-spaced buckets from 10 µs to 60 s with growth factor
γ = (1 + ε) / (1 − ε); a bucket is reported by the value 2γ^i·lo/(γ + 1), so every
percentile is within ε = 5 % (relative) of a latency that was observed at that rank.
Estimates are clamped to the window's exact min and max; values above 60 s report as max.

Windows (`?period=`): each is a ring of slots, and covers its current, partial slot plus
the previous full ones, so it spans between `period − slot` and `period`:
5m = 300 × 1 s, 1h = 60 × 1 min, 24h = 96 × 15 min, 30d = 120 × 6 h. No period: since
the process started (the aggregate is exact, not windowed).

What counts as an error (`error_count`, `error_rate`): a server-side fault —
UNKNOWN, INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, DATA_LOSS, RESOURCE_EXHAUSTED.
Every other non-OK code (INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND, ABORTED,
UNAUTHENTICATED, PERMISSION_DENIED, CANCELLED, ...) is the caller's problem and is counted
as `client_error_count` / `client_error_rate`. Rates are fractions in [0, 1]; the
`*_percent` fields are the same rates × 100.

The Prometheus gRPC server metrics live in `registry`, this object's own
CollectorRegistry, under the names and labels of go-grpc-prometheus / py-grpc-prometheus,
so the community's gRPC dashboards and alerts read them as they are:
`grpc_server_started_total{grpc_type,grpc_service,grpc_method}` (fed by `started`),
`grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}` and the
`grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}` histogram (fed by the
same `record` call as the windows). Every measured call is unary (`grpc_type="unary"`).

History (jackpot_grpc.history): `record` also adds each call to a per-method pending
`Stats`; `drain()` hands those deltas over (an O(1) swap per method, O(buckets) to
allocate the fresh one) and `pending()` copies them without draining. The metrics
sampler writes the drained deltas as per-minute rollups (sparse histogram buckets, exact
counts, sum, min and max), so histograms from many minutes, methods and processes merge
exactly by summing bucket counts (`Stats.merge`, `Stats.from_parts`): a percentile of a
merged histogram is as good as one of a single process — within RELATIVE_ERROR.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

from jackpot_grpc.contract.names import JACKPOT_SERVICE

RELATIVE_ERROR = 0.05
MIN_MS = 0.01
MAX_MS = 60_000.0
_GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(_GAMMA)
_TOP = math.ceil(math.log(MAX_MS / MIN_MS) / _LOG_GAMMA)  # last bounded bucket
HISTOGRAM_BUCKETS = _TOP + 2  # 0: ≤ MIN_MS, 1.._TOP: log-spaced, _TOP + 1: above

STATUS_CODES: tuple[grpc.StatusCode, ...] = tuple(grpc.StatusCode)
_CODE_INDEX: dict[grpc.StatusCode, int] = {c: i for i, c in enumerate(STATUS_CODES)}
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
_SERVER_ERROR_INDEXES = tuple(_CODE_INDEX[c] for c in SERVER_ERRORS)
_OK_INDEX = _CODE_INDEX[grpc.StatusCode.OK]
_UNKNOWN_INDEX = _CODE_INDEX[grpc.StatusCode.UNKNOWN]


@dataclass(frozen=True)
class Window:
    name: str
    slot_seconds: float
    slots: int

    @property
    def seconds(self) -> float:
        return self.slot_seconds * self.slots


WINDOWS: tuple[Window, ...] = (
    Window("5m", 1.0, 300),
    Window("1h", 60.0, 60),
    Window("24h", 900.0, 96),
    Window("30d", 21_600.0, 120),
)
FINE = WINDOWS[0]  # every other slot is a whole number of these
PERIODS: dict[str, Window] = {w.name: w for w in WINDOWS}
SINCE_START = "since_start"
MAX_METHODS = 64  # more distinct names than this fold into "other": bounded memory

# Prometheus buckets (seconds), including the runbook's latency thresholds.
PROMETHEUS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


_CODE_BY_NAME: dict[str, int] = {c.name: i for i, c in enumerate(STATUS_CODES)}
_GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
_UNARY = "unary"


class UnknownPeriod(ValueError):
    def __init__(self, period: str) -> None:
        super().__init__(
            f"unknown period {period!r}: use one of {', '.join(PERIODS)} (or none: since start)"
        )
        self.period = period


def bucket_of(ms: float) -> int:
    if ms <= MIN_MS:
        return 0
    return min(math.ceil(math.log(ms / MIN_MS) / _LOG_GAMMA), _TOP + 1)


def bucket_value(index: int) -> float:
    """The value reported for a bucket: within RELATIVE_ERROR of anything in it."""
    if index <= 0:
        return MIN_MS
    if index > _TOP:
        return MAX_MS
    return MIN_MS * 2 * _GAMMA**index / (_GAMMA + 1)


class Stats:
    """Counts by status code, latency sum/min/max and histogram, for one slot or window."""

    __slots__ = ("codes", "count", "hist", "max_ms", "min_ms", "sum_ms")

    def __init__(self) -> None:
        self.count = 0
        self.codes = [0] * len(STATUS_CODES)
        self.sum_ms = 0.0
        self.min_ms = math.inf
        self.max_ms = 0.0
        self.hist = array("Q", bytes(8 * HISTOGRAM_BUCKETS))

    def add(self, code: int, ms: float, bucket: int) -> None:
        self.count += 1
        self.codes[code] += 1
        self.sum_ms += ms
        if ms < self.min_ms:
            self.min_ms = ms
        if ms > self.max_ms:
            self.max_ms = ms
        self.hist[bucket] += 1

    def merge(self, other: Stats) -> None:
        self.count += other.count
        self.sum_ms += other.sum_ms
        self.min_ms = min(self.min_ms, other.min_ms)
        self.max_ms = max(self.max_ms, other.max_ms)
        for i, n in enumerate(other.codes):
            self.codes[i] += n
        hist = self.hist
        for i, n in enumerate(other.hist):
            if n:
                hist[i] += n

    @classmethod
    def from_parts(
        cls,
        *,
        codes: Mapping[str, int],
        sum_ms: float,
        min_ms: float | None,
        max_ms: float | None,
        hist: Iterable[tuple[int, int]],
    ) -> Stats:
        """Stats rebuilt from stored parts: status-code counts by name, latency sum, min,
        max and sparse (bucket index, count) pairs. `count` is the sum of the code counts;
        an unknown code name counts as UNKNOWN and a bucket index out of range is clamped,
        so a stored row never fails to load.
        """
        stats = cls()
        for name, n in codes.items():
            if n:
                stats.codes[_CODE_BY_NAME.get(name, _UNKNOWN_INDEX)] += int(n)
        stats.count = sum(stats.codes)
        stats.sum_ms = float(sum_ms)
        if stats.count:
            stats.min_ms = math.inf if min_ms is None else float(min_ms)
            stats.max_ms = 0.0 if max_ms is None else float(max_ms)
        buckets = stats.hist
        for index, n in hist:
            if n:
                buckets[min(max(int(index), 0), HISTOGRAM_BUCKETS - 1)] += int(n)
        return stats

    def copy(self) -> Stats:
        duplicate = Stats()
        duplicate.merge(self)
        return duplicate

    def code_counts(self) -> dict[str, int]:
        """Non-zero counts by status-code name (OK, INVALID_ARGUMENT, ...)."""
        return {code.name: n for code, n in zip(STATUS_CODES, self.codes, strict=True) if n}

    def sparse_histogram(self) -> tuple[list[int], list[int]]:
        """The non-empty buckets: (indexes ascending, counts). O(buckets)."""
        indexes: list[int] = []
        counts: list[int] = []
        for index, n in enumerate(self.hist):
            if n:
                indexes.append(index)
                counts.append(n)
        return indexes, counts

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile (q in [0, 1]) estimated from the histogram."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, n in enumerate(self.hist):
            seen += n
            if seen >= rank:
                return min(max(bucket_value(index), self.min_ms), self.max_ms)
        return self.max_ms  # unreachable: the histogram holds `count` values

    @property
    def error_count(self) -> int:
        return sum(self.codes[i] for i in _SERVER_ERROR_INDEXES)

    @property
    def client_error_count(self) -> int:
        return self.count - self.codes[_OK_INDEX] - self.error_count


class Ring:
    """A fixed number of time slots; a slot is reset when its time comes round again."""

    def __init__(self, window: Window) -> None:
        self.window = window
        self.slots: list[Stats | None] = [None] * window.slots
        self.epochs: list[int] = [-1] * window.slots

    def slot(self, now: float) -> Stats:
        epoch = int(now // self.window.slot_seconds)
        position = epoch % self.window.slots
        stats = self.slots[position]
        if stats is None or self.epochs[position] != epoch:
            stats = self.slots[position] = Stats()
            self.epochs[position] = epoch
        return stats

    def live(self, now: float) -> Iterable[Stats]:
        """The slots inside the window ending now."""
        current = int(now // self.window.slot_seconds)
        oldest = current - self.window.slots + 1
        for stats, epoch in zip(self.slots, self.epochs, strict=True):
            if stats is not None and oldest <= epoch <= current:
                yield stats


def window_start(window: Window, now: float) -> float:
    """When the window ending now begins: the start of its oldest slot."""
    current = int(now // window.slot_seconds)
    return (current - window.slots + 1) * window.slot_seconds


class Series:
    """One method's rings and since-start aggregate.

    A call touches only the current one-second slot. When the second changes, the finished
    slot is merged once into the coarser rings and the aggregate (a roll-up), so the cost
    per call stays at one slot update whatever the number of windows.
    """

    def __init__(self) -> None:
        self.total = Stats()
        self.rings = [Ring(w) for w in WINDOWS]
        self.current: Stats | None = None
        self.current_epoch = -1
        self.pending = Stats()  # since the last drain (RequestMetrics.drain)

    def add(self, now: float, code: int, ms: float) -> None:
        epoch = int(now // FINE.slot_seconds)
        current = self.current
        if current is None or epoch != self.current_epoch:
            self._roll_up()
            current = self.current = self.rings[0].slot(now)
            self.current_epoch = epoch
        bucket = bucket_of(ms)
        current.add(code, ms, bucket)
        self.pending.add(code, ms, bucket)

    def _roll_up(self) -> None:
        if self.current is None:
            return
        at = self.current_epoch * FINE.slot_seconds
        self.total.merge(self.current)
        for ring in self.rings[1:]:
            ring.slot(at).merge(self.current)

    def since_start(self) -> Stats:
        merged = Stats()
        merged.merge(self.total)
        if self.current is not None:
            merged.merge(self.current)
        return merged

    def window(self, index: int, now: float) -> Stats:
        merged = Stats()
        for stats in self.rings[index].live(now):
            merged.merge(stats)
        start = window_start(WINDOWS[index], now)
        if index and self.current is not None and self.current_epoch * FINE.slot_seconds >= start:
            merged.merge(self.current)  # the second not yet rolled up
        return merged


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def describe(stats: Stats, seconds: float) -> dict[str, Any]:
    """The JSON shape of one set of stats over `seconds` (the runbook reads these names)."""
    count = stats.count
    errors = stats.error_count
    client_errors = stats.client_error_count
    per_second = count / seconds if seconds > 0 else 0.0
    return {
        "total_requests": count,
        "success_count": stats.codes[_OK_INDEX],
        "error_count": errors,
        "client_error_count": client_errors,
        "error_rate": errors / count if count else 0.0,
        "error_rate_percent": 100.0 * errors / count if count else 0.0,
        "client_error_rate": client_errors / count if count else 0.0,
        "client_error_rate_percent": 100.0 * client_errors / count if count else 0.0,
        "status_codes": {
            code.name: n for code, n in zip(STATUS_CODES, stats.codes, strict=True) if n
        },
        "response_times": {
            "avg": _ms(stats.sum_ms / count if count else None),
            "min": _ms(stats.min_ms if count else None),
            "max": _ms(stats.max_ms if count else None),
            "p50": _ms(stats.percentile(0.50)),
            "p90": _ms(stats.percentile(0.90)),
            "p95": _ms(stats.percentile(0.95)),
            "p99": _ms(stats.percentile(0.99)),
        },
        "throughput": {
            "per_second": round(per_second, 3),
            "per_minute": round(per_second * 60, 3),
        },
    }


def summarize(
    per_method: Mapping[str, Stats],
    period: str,
    seconds: float,
    uptime: float,
    *,
    source: str,
) -> dict[str, Any]:
    """The /metrics JSON: totals merged over the methods, and each method's figures.

    `source` says where the figures come from: "memory" (this process's windows) or
    "database" (the stored rollups of every process, plus what is not yet flushed).
    """
    total = Stats()
    for stats in per_method.values():
        total.merge(stats)
    return {
        "period": period,
        "source": source,
        "window_seconds": round(seconds, 3),
        "uptime_seconds": round(uptime, 3),
        **describe(total, seconds),
        "methods": {m: describe(s, seconds) for m, s in sorted(per_method.items())},
        "units": {
            "response_times": "milliseconds",
            "error_rate": "fraction of total_requests (0..1); *_percent is × 100",
            "throughput": "requests per second / per minute over window_seconds",
            "percentile_relative_error": RELATIVE_ERROR,
        },
    }


# Statements stopped by lock_timeout / statement_timeout (adapters.unit_of_work), by kind
# ("lock", "statement"). One per process; every RequestMetrics registry exposes it.
DATABASE_TIMEOUTS = Counter(
    "jackpot_db_timeouts",
    "Database statements stopped by the lock or statement timeout, by kind.",
    ("kind",),
    registry=None,
)

# Commits whose outcome is unknown (adapters.commit_bound), by why: "timeout"
# (JACKPOT_COMMIT_TIMEOUT), "sync_rep_cancelled" (the server's warning that the wait for a
# synchronous standby was cancelled), "connection_lost" (the connection ended mid-commit).
COMMIT_OUTCOME_UNKNOWN = Counter(
    "jackpot_commit_outcome_unknown",
    "Commits never acknowledged because their outcome is unknown, by reason.",
    ("reason",),
    registry=None,
)
COMMIT_UNKNOWN_REASONS = ("timeout", "sync_rep_cancelled", "connection_lost")
for _reason in COMMIT_UNKNOWN_REASONS:  # exported at 0 from the start: alerts can read them
    COMMIT_OUTCOME_UNKNOWN.labels(_reason)


class RequestMetrics:
    """Records every RPC; answers summaries over a period. Runs on the event loop only."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, service: str = JACKPOT_SERVICE
    ) -> None:
        self._clock = clock
        self.started_at = clock()
        self.service = service  # the grpc_service label: the one service this object measures
        self._series: dict[str, Series] = {}
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.registry.register(DATABASE_TIMEOUTS)
        self.registry.register(COMMIT_OUTCOME_UNKNOWN)
        self._started = Counter(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            _GRPC_LABELS,
            registry=self.registry,
        )
        self._handled = Counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*_GRPC_LABELS, "grpc_code"),
            registry=self.registry,
        )
        self._latency = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level"
            " handled by the server.",
            _GRPC_LABELS,
            buckets=PROMETHEUS_BUCKETS,
            registry=self.registry,
        )
        self._started_children: dict[str, Any] = {}
        self._children: dict[tuple[str, grpc.StatusCode], tuple[Any, Any]] = {}
        self._auth_failures = Counter(
            "jackpot_auth_failures",
            "Calls refused by authentication or authorisation, by reason.",
            ("reason",),
            registry=self.registry,
        )

    def auth_failure(self, reason: str) -> None:
        """One refused call (entrypoints/auth.py; reasons are a small fixed set)."""
        self._auth_failures.labels(reason).inc()

    def _label(self, method: str) -> str:
        """The method's name, or "other" once MAX_METHODS names are known: bounded memory."""
        if method in self._series or len(self._series) < MAX_METHODS:
            return method
        return "other"

    def started(self, method: str) -> None:
        """A call has arrived (grpc_server_started_total)."""
        method = self._label(method)
        child = self._started_children.get(method)
        if child is None:
            child = self._started_children[method] = self._started.labels(
                _UNARY, self.service, method
            )
        child.inc()

    def record(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        method = self._label(method)
        series = self._series.get(method)
        if series is None:
            series = self._series.setdefault(method, Series())
        series.add(self._clock(), _CODE_INDEX[code], seconds * 1000.0)
        children = self._children.get((method, code))
        if children is None:
            children = self._children[(method, code)] = (
                self._handled.labels(_UNARY, self.service, method, code.name),
                self._latency.labels(_UNARY, self.service, method),
            )
        children[0].inc()
        children[1].observe(seconds)

    def uptime(self) -> float:
        return self._clock() - self.started_at

    def covers(self, period: str) -> bool:
        """Whether this process has been up for the whole of `period` (a PERIODS key), so
        its in-memory window holds everything that period asks for."""
        if period not in PERIODS:
            raise UnknownPeriod(period)
        return self.uptime() >= PERIODS[period].seconds

    def drain(self) -> dict[str, Stats]:
        """Per-method deltas since the last drain (methods with no call are left out).

        O(1) per method (the pending Stats is swapped for a fresh one), so the caller owns
        what it gets; runs on the event loop, like `record`.
        """
        drained: dict[str, Stats] = {}
        for method, series in self._series.items():
            if series.pending.count:
                drained[method] = series.pending
                series.pending = Stats()
        return drained

    def pending(self) -> dict[str, Stats]:
        """Copies of what `drain` would hand over now, leaving it in place."""
        return {m: s.pending.copy() for m, s in self._series.items() if s.pending.count}

    def summary(self, period: str | None = None) -> dict[str, Any]:
        """Totals and per-method figures over `period` (a PERIODS key; None: since start)."""
        now = self._clock()
        if period is None or period == "":
            seconds = now - self.started_at
            per_method = {m: series.since_start() for m, series in self._series.items()}
            name = SINCE_START
        else:
            if period not in PERIODS:
                raise UnknownPeriod(period)
            index = WINDOWS.index(PERIODS[period])
            per_method = {m: series.window(index, now) for m, series in self._series.items()}
            seconds = now - max(self.started_at, window_start(WINDOWS[index], now))
            name = period
        return summarize(per_method, name, seconds, now - self.started_at, source="memory")

    def slot_count(self) -> int:
        """Allocated slots over every method and window: bounded by design."""
        return sum(
            1
            for series in self._series.values()
            for ring in series.rings
            for stats in ring.slots
            if stats is not None
        )
