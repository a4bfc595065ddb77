"""The trend report: per-day requests, error rate, latency and resources over a period.

`load_trend(conn, "30d")` reads the metrics history (every process's rollups and system
samples) into a `Trend`; `trend.as_dict()` is its JSON form; `render_trend(trend)` is a
table and small bar charts for a terminal. Days are calendar days in the connection's
time zone, as the runbook's `date_trunc('day', stat_timestamp)` counts them.

Each day's p95/p99 come from that day's histogram, the sum over every minute and process
(adapters.history_store), so they carry the same ±5 % bound as the live figures; the
period's totals merge the days' histograms the same way, never averaging percentiles.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from jackpot_grpc.adapters import history_store as store
from jackpot_grpc.observability.history_records import sum_stats
from jackpot_grpc.observability.metrics import RELATIVE_ERROR
from jackpot_grpc.text.table import render_table

_PERIOD = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
BARS = " ▁▂▃▄▅▆▇█"
ASCII_BARS = " .:-=+*#%@"
_EIGHTHS = " ▏▎▍▌▋▊▉█"


def parse_period(text: str) -> timedelta:
    """'30d', '24h', '90m', '2w', '3600s' → a timedelta (positive)."""
    match = _PERIOD.match(text)
    if match is None:
        raise ValueError(f"period {text!r}: use a number and a unit s, m, h, d or w (e.g. 30d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"period {text!r} must be positive")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class TrendDay:
    day: date
    requests: int = 0
    server_errors: int = 0
    client_errors: int = 0
    error_rate: float | None = None  # server errors / requests (0..1)
    avg_ms: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    avg_cpu: float | None = None  # percent of one CPU, averaged over samples
    max_cpu: float | None = None
    avg_memory: float | None = None  # percent of machine memory, averaged over samples
    max_memory: float | None = None
    avg_connections: float | None = None
    max_pool_waiting: int | None = None
    max_rss_bytes: int | None = None
    samples: int = 0
    processes: int = 0


@dataclass(frozen=True)
class Trend:
    period: str
    since: datetime
    until: datetime
    days: list[TrendDay]  # only days with data, oldest first
    requests: int
    server_errors: int
    client_errors: int
    error_rate: float | None
    avg_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "totals": {
                "requests": self.requests,
                "server_errors": self.server_errors,
                "client_errors": self.client_errors,
                "error_rate": self.error_rate,
                "avg_ms": self.avg_ms,
                "p95_ms": self.p95_ms,
                "p99_ms": self.p99_ms,
            },
            "days": [
                {**{k: v for k, v in vars(d).items() if k != "day"}, "day": d.day.isoformat()}
                for d in self.days
            ],
            "units": {
                "latency": "milliseconds",
                "error_rate": "server errors / requests (0..1)",
                "cpu": "percent of one CPU (per process, averaged over samples)",
                "memory": "percent of machine memory (per process, averaged over samples)",
                "percentile_relative_error": RELATIVE_ERROR,
            },
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def load_trend(
    conn: store.SyncConn, period: str | timedelta = "30d", now: datetime | None = None
) -> Trend:
    """The per-day trend over `period` ending now, from the stored history."""
    span = parse_period(period) if isinstance(period, str) else period
    until = now or datetime.now(UTC)
    since = until - span
    requests = store.daily_requests(conn, since)
    system = store.daily_system(conn, since)
    by_day: dict[date, dict[str, Any]] = {}
    for r in requests:
        s = r.latency
        by_day.setdefault(r.day.date(), {}).update(
            requests=r.requests,
            server_errors=r.server_errors,
            client_errors=r.client_errors,
            error_rate=r.server_errors / r.requests if r.requests else None,
            avg_ms=_round(s.sum_ms / s.count if s.count else None),
            p50_ms=_round(s.percentile(0.50)),
            p95_ms=_round(s.percentile(0.95)),
            p99_ms=_round(s.percentile(0.99)),
            max_ms=_round(s.max_ms if s.count else None),
        )
    for row in system:
        figures = {k: v for k, v in row.items() if k != "day"}
        for key in ("avg_cpu", "max_cpu", "avg_memory", "max_memory", "avg_connections"):
            figures[key] = _round(figures[key], 2)
        by_day.setdefault(row["day"].date(), {}).update(figures)
    days = [TrendDay(day=d, **by_day[d]) for d in sorted(by_day)]
    total = sum_stats(r.latency for r in requests)
    server_errors = sum(r.server_errors for r in requests)
    return Trend(
        period=period if isinstance(period, str) else f"{span.total_seconds():g}s",
        since=since,
        until=until,
        days=days,
        requests=total.count,
        server_errors=server_errors,
        client_errors=sum(r.client_errors for r in requests),
        error_rate=server_errors / total.count if total.count else None,
        avg_ms=_round(total.sum_ms / total.count if total.count else None),
        p95_ms=_round(total.percentile(0.95)),
        p99_ms=_round(total.percentile(0.99)),
    )


# --- rendering ---------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _percent(rate: float | None) -> float | None:
    return None if rate is None else 100.0 * rate


def sparkline(values: Sequence[float | None], *, ascii_only: bool = False) -> str:
    """One character per value, scaled from 0 to the largest; a gap (None) is a space."""
    ramp = ASCII_BARS if ascii_only else BARS
    present = [v for v in values if v is not None and math.isfinite(v)]
    top = max(present, default=0.0)
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(" ")
        elif top <= 0:
            out.append(ramp[1])
        else:
            out.append(ramp[max(1, min(len(ramp) - 1, math.ceil(v / top * (len(ramp) - 1))))])
    return "".join(out)


def bar(value: float, top: float, width: int, *, ascii_only: bool = False) -> str:
    """A horizontal bar of `width` characters at most, in eighths of a character."""
    if top <= 0 or value <= 0:
        return ""
    eighths = round(value / top * width * 8)
    if ascii_only:
        return "#" * max(1, round(eighths / 8))
    full, rest = divmod(max(eighths, 1), 8)
    return "█" * full + (_EIGHTHS[rest] if rest else "")


def _calendar(trend: Trend) -> list[TrendDay]:
    """Every day from the first with data to the last, empty days filled in."""
    if not trend.days:
        return []
    known = {d.day: d for d in trend.days}
    first, last = trend.days[0].day, trend.days[-1].day
    return [
        known.get(first + timedelta(days=i), TrendDay(day=first + timedelta(days=i)))
        for i in range((last - first).days + 1)
    ]


_CHARTS: tuple[tuple[str, Callable[[TrendDay], float | None]], ...] = (
    ("requests", lambda d: float(d.requests) if d.requests or d.samples else None),
    ("error rate %", lambda d: _percent(d.error_rate)),
    ("avg ms", lambda d: d.avg_ms),
    ("p95 ms", lambda d: d.p95_ms),
    ("avg cpu %", lambda d: d.avg_cpu),
    ("avg memory %", lambda d: d.avg_memory),
    ("avg connections", lambda d: d.avg_connections),
)


def render_trend(trend: Trend, *, width: int = 40, ascii_only: bool = False) -> str:
    """The trend as text: a per-day table, sparklines, and bars of requests per day."""
    head = (
        f"Trend over {trend.period}: {trend.since:%Y-%m-%d %H:%M} .. "
        f"{trend.until:%Y-%m-%d %H:%M} UTC, {len(trend.days)} day(s) with data"
    )
    if not trend.days:
        return head + "\n(no metrics history in this period)\n"
    columns = (
        "day",
        "requests",
        "errors",
        "error_%",
        "avg_ms",
        "p95_ms",
        "p99_ms",
        "avg_cpu_%",
        "avg_mem_%",
        "avg_conn",
        "procs",
    )
    rows = [
        [
            d.day.isoformat(),
            _fmt(d.requests),
            _fmt(d.server_errors),
            _fmt(_percent(d.error_rate), 3),
            _fmt(d.avg_ms),
            _fmt(d.p95_ms),
            _fmt(d.p99_ms),
            _fmt(d.avg_cpu, 1),
            _fmt(d.avg_memory, 1),
            _fmt(d.avg_connections, 1),
            _fmt(d.processes),
        ]
        for d in trend.days
    ]
    rows.append(
        [
            "total",
            _fmt(trend.requests),
            _fmt(trend.server_errors),
            _fmt(_percent(trend.error_rate), 3),
            _fmt(trend.avg_ms),
            _fmt(trend.p95_ms),
            _fmt(trend.p99_ms),
            "",
            "",
            "",
            "",
        ]
    )
    right_aligned = [False] + [True] * (len(columns) - 1)  # the day, then figures
    out = [head, "", render_table(columns, rows, right_aligned), ""]

    calendar = _calendar(trend)
    label = max(len(name) for name, _ in _CHARTS)
    out.append(
        f"{'':{label}}  {calendar[0].day:%m-%d}"
        + (f" .. {calendar[-1].day:%m-%d}" if len(calendar) > 1 else "")
    )
    for name, pick in _CHARTS:
        values = [pick(d) for d in calendar]
        present = [v for v in values if v is not None]
        if not present:
            continue
        line = sparkline(values, ascii_only=ascii_only)
        top_value = max(present)
        shown = _fmt(int(top_value)) if name == "requests" else _fmt(top_value)
        out.append(f"{name:<{label}}  {line}  max {shown}")
    out.append("")
    out.append("requests per day")
    top = float(max((d.requests for d in calendar), default=0))
    for d in calendar:
        drawn = bar(float(d.requests), top, width, ascii_only=ascii_only)
        out.append(f"{d.day.isoformat()} {drawn:<{width}} {_fmt(d.requests)}")
    return "\n".join(out) + "\n"
