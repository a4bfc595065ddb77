"""The performance report: the service's metrics JSON, timed probes and the database's view.

The metrics JSON (GET /metrics on the health port) is read defensively: a missing or
oddly-typed field shows as "-", never as an error. Thresholds are the runbook's.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import grpc
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.ops.grpc_client import channel, describe_error

# Runbook: SLA < 100 ms; performance degradation alert > 500 ms; error rate target < 0.1 %,
# warning > 0.5 %, critical > 1 %.
SLA_MS = 100.0
DEGRADED_MS = 500.0
ERROR_RATE_TARGET = 0.001
ERROR_RATE_WARNING = 0.005
ERROR_RATE_CRITICAL = 0.01


@dataclass
class MetricsFetch:
    url: str
    ok: bool
    error: str = ""
    data: dict[str, Any] | None = None


def metrics_url(base: str, period: str | None) -> str:
    parts = urlsplit(base if "://" in base else f"http://{base}")
    if parts.path in ("", "/"):
        parts = parts._replace(path="/metrics")
    if period:
        query = f"{parts.query}&period={period}" if parts.query else f"period={period}"
        parts = parts._replace(query=query)
    return urlunsplit(parts)


async def fetch_metrics(url: str, rpc_timeout: float = 5.0) -> MetricsFetch:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=rpc_timeout)) as session,
            session.get(url, headers={"Accept": "application/json"}) as response,
        ):
            body = await response.text()
            if response.status != 200:
                return MetricsFetch(url, False, f"HTTP {response.status}: {body.strip()[:200]}")
            try:
                data = await response.json(content_type=None)
            except ValueError:
                kind = response.headers.get("Content-Type", "?")
                return MetricsFetch(url, False, f"not JSON (Content-Type {kind})")
    except aiohttp.ClientConnectorError as exc:
        refused = isinstance(exc.os_error, ConnectionRefusedError)
        return MetricsFetch(url, False, "connection refused" if refused else str(exc))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return MetricsFetch(url, False, "timed out" if isinstance(exc, TimeoutError) else str(exc))
    if not isinstance(data, dict):
        return MetricsFetch(url, False, "metrics JSON is not an object")
    return MetricsFetch(url, True, data=data)


def _number(data: Any, *path: str) -> float | None:
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return None
        data = data[key]
    if isinstance(data, bool) or not isinstance(data, int | float):
        return None
    return float(data)


def _throughput_per_minute(data: Mapping[str, Any]) -> float | None:
    value = data.get("throughput")
    if isinstance(value, Mapping):
        per_minute = _number(value, "per_minute")
        if per_minute is not None:
            return per_minute
        per_second = _number(value, "per_second")
        return None if per_second is None else per_second * 60
    return _number(data, "throughput")  # a bare number: taken as per minute (runbook's unit)


def _grade_latency(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms > DEGRADED_MS:
        return "CRITICAL (> 500 ms)"
    return "ok" if ms < SLA_MS else "above SLA (100 ms)"


def _grade_errors(rate: float | None) -> str:
    if rate is None:
        return "-"
    if rate > ERROR_RATE_CRITICAL:
        return "CRITICAL (> 1%)"
    if rate > ERROR_RATE_WARNING:
        return "WARNING (> 0.5%)"
    return "ok" if rate < ERROR_RATE_TARGET else "above target (0.1%)"


def summarize(data: Mapping[str, Any]) -> dict[str, Any]:
    error_rate = _number(data, "error_rate")
    p95 = _number(data, "response_times", "p95")
    return {
        "period": data.get("period") if isinstance(data.get("period"), str) else None,
        "window_seconds": _number(data, "window_seconds"),
        "total_requests": _number(data, "total_requests"),
        "error_rate_percent": None if error_rate is None else round(error_rate * 100, 4),
        "error_rate_status": _grade_errors(error_rate),
        "avg_ms": _number(data, "response_times", "avg"),
        "p95_ms": p95,
        "p99_ms": _number(data, "response_times", "p99"),
        "p95_status": _grade_latency(p95),
        "throughput_per_minute": _throughput_per_minute(data),
    }


def off_target(summary: Mapping[str, Any]) -> list[str]:
    """What the grades say is wrong: an error rate above target (0.1 %), a p95 past the
    degradation level (500 ms). A report that finds either fails (exit 1)."""
    problems: list[str] = []
    if summary["error_rate_status"] not in ("ok", "-"):
        rate = f"{summary['error_rate_percent']:g}%"
        problems.append(f"error rate {rate} {summary['error_rate_status']}")
    if summary["p95_status"].startswith("CRITICAL"):
        problems.append(f"p95 {summary['p95_ms']} ms {summary['p95_status']}")
    return problems


def method_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    methods = data.get("methods")
    items: list[tuple[str, Any]] = []
    if isinstance(methods, Mapping):
        items = [(str(k), v) for k, v in methods.items()]
    elif isinstance(methods, list):
        items = [
            (str(m.get("method") or m.get("name") or "?"), m)
            for m in methods
            if isinstance(m, Mapping)
        ]
    out = []
    for name, figures in items:
        error_rate = _number(figures, "error_rate")
        out.append(
            {
                "method": name,
                "requests": _number(figures, "total_requests"),
                "error_rate_percent": None if error_rate is None else round(error_rate * 100, 4),
                "avg_ms": _number(figures, "response_times", "avg"),
                "p95_ms": _number(figures, "response_times", "p95"),
                "p99_ms": _number(figures, "response_times", "p99"),
                "per_minute": _throughput_per_minute(figures)
                if isinstance(figures, Mapping)
                else None,
            }
        )
    return out


async def probe(
    settings: Settings, target: str, calls: int, rpc_timeout: float = 5.0
) -> list[dict[str, Any]]:
    """Time read-only RPCs (the runbook's curl timings of the pools/statistics endpoints)."""
    rows: list[dict[str, Any]] = []
    async with channel(settings, target) as chan:
        stub = jackpot_pb2_grpc.JackpotServiceStub(chan)
        calls_by_name: dict[str, Callable[[], Awaitable[object]]] = {
            "GetPools": lambda: stub.GetPools(pb.GetPoolsRequest(), timeout=rpc_timeout),
            "GetStatistics": lambda: stub.GetStatistics(
                pb.GetStatisticsRequest(), timeout=rpc_timeout
            ),
            "GetConfig": lambda: stub.GetConfig(pb.GetConfigRequest(), timeout=rpc_timeout),
        }
        for name, call in calls_by_name.items():
            times: list[float] = []
            error = ""
            for _ in range(calls):
                started = time.perf_counter()
                try:
                    await call()
                except grpc.aio.AioRpcError as exc:
                    error = describe_error(exc)
                    break
                times.append((time.perf_counter() - started) * 1000)
            ordered = sorted(times)
            rows.append(
                {
                    "rpc": name,
                    "calls": len(times),
                    "avg_ms": round(statistics.fmean(times), 3) if times else None,
                    "p95_ms": round(ordered[max(0, math.ceil(len(ordered) * 0.95) - 1)], 3)
                    if ordered
                    else None,
                    "max_ms": round(ordered[-1], 3) if ordered else None,
                    "error": error,
                }
            )
    return rows
