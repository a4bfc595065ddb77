"""Is the service up? grpc.health.v1 on the gRPC port, and GET /health on the health port."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.contract.names import JACKPOT_SERVICE
from jackpot_grpc.ops.grpc_client import channel
from jackpot_grpc.text.messages import first_line

GRPC_SERVICES = ("", JACKPOT_SERVICE)


@dataclass(frozen=True)
class Check:
    check: str
    target: str
    healthy: bool
    status: str
    latency_ms: float | None
    detail: str = ""


def _elapsed(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def grpc_checks(settings: Settings, target: str, rpc_timeout: float = 3.0) -> list[Check]:
    checks: list[Check] = []
    async with channel(settings, target) as chan:
        stub = health_pb2_grpc.HealthStub(chan)
        for service in GRPC_SERVICES:
            name = f"grpc health {service or '(server)'}"
            started = time.perf_counter()
            try:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=rpc_timeout
                )
            except grpc.aio.AioRpcError as exc:
                unreachable = exc.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
                checks.append(
                    Check(
                        name,
                        target,
                        False,
                        "UNREACHABLE" if unreachable else exc.code().name,
                        _elapsed(started),
                        first_line(exc.details())[:200],
                    )
                )
                continue
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            checks.append(Check(name, target, status == "SERVING", status, _elapsed(started)))
    return checks


def health_url(base: str, path: str = "/health") -> str:
    """`http://host:3001` → `http://host:3001/health`; a URL with a path is taken as is."""
    parts = urlsplit(base if "://" in base else f"http://{base}")
    if parts.path in ("", "/"):
        parts = parts._replace(path=path)
    return urlunsplit(parts)


async def http_check(url: str, rpc_timeout: float = 3.0) -> Check:
    started = time.perf_counter()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=rpc_timeout)) as session,
            session.get(url, headers={"Accept": "application/json"}) as response,
        ):
            body = await response.text()
    except aiohttp.ClientConnectorError as exc:
        reason = "connection refused" if isinstance(exc.os_error, ConnectionRefusedError) else ""
        return Check(
            "http health", url, False, "UNREACHABLE", _elapsed(started), reason or str(exc)
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        detail = "timed out" if isinstance(exc, TimeoutError) else str(exc)
        return Check("http health", url, False, "UNREACHABLE", _elapsed(started), detail)
    detail = body.strip()[:200]
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and "status" in parsed:
            detail = f"status={parsed['status']}"
    except ValueError:
        pass
    return Check(
        "http health",
        url,
        response.status == 200,
        f"HTTP {response.status}",
        _elapsed(started),
        detail,
    )


def _health_page(base: str, path: str) -> str:
    """`http://host:3001[/anything]` → `http://host:3001{path}`."""
    parts = urlsplit(base if "://" in base else f"http://{base}")
    return urlunsplit(parts._replace(path=path, query=""))


async def _get_json(url: str, rpc_timeout: float) -> tuple[int, Any]:
    """A health-port page's HTTP status and JSON (raises aiohttp.ClientError, TimeoutError,
    ValueError)."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=rpc_timeout)) as session,
        session.get(url, headers={"Accept": "application/json"}) as response,
    ):
        return response.status, await response.json(content_type=None)


def books_url(base: str) -> str:
    """`http://host:3001[/anything]` → `http://host:3001/health/jackpot`."""
    return _health_page(base, "/health/jackpot")


async def books_check(base: str, rpc_timeout: float = 3.0) -> Check:
    """The service's latest ledger audit (/health/jackpot's `ledger`): books that do not
    balance make the service unhealthy, whatever its database does."""
    url = books_url(base)
    started = time.perf_counter()
    try:
        status, body = await _get_json(url, rpc_timeout)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        detail = "timed out" if isinstance(exc, TimeoutError) else first_line(str(exc))
        return Check("books", url, False, "UNREACHABLE", _elapsed(started), detail[:200])
    ledger = body.get("ledger") if isinstance(body, dict) else None
    if not isinstance(ledger, dict):
        return Check("books", url, False, f"HTTP {status}", _elapsed(started), "no ledger")
    if ledger.get("balanced") is False:
        problems = "; ".join(str(p) for p in ledger.get("problems") or [])
        return Check("books", url, False, "UNBALANCED", _elapsed(started), problems[:200])
    if body.get("pools_readable") is False:
        # The ledger cannot be read now: the last verdict is old news, not a state.
        last = (
            f"last audit balanced {ledger.get('age_seconds')} s ago"
            if ledger.get("checked")
            else "not audited yet"
        )
        error = first_line(str(body.get("pools_error") or "database unreadable"))
        detail = f"ledger unreadable ({error}); {last}"
        return Check("books", url, False, "UNKNOWN", _elapsed(started), detail[:200])
    if not ledger.get("checked"):
        return Check("books", url, True, "NOT AUDITED YET", _elapsed(started), "")
    detail = f"audited {ledger.get('age_seconds')} s ago"
    return Check("books", url, True, "BALANCED", _elapsed(started), detail)


async def run_checks(
    settings: Settings, grpc_target: str | None, http_base: str | None, rpc_timeout: float = 3.0
) -> list[Check]:
    jobs = []
    if grpc_target:
        jobs.append(grpc_checks(settings, grpc_target, rpc_timeout))
    if http_base:

        async def one_http() -> list[Check]:
            return [
                await http_check(health_url(http_base), rpc_timeout),
                await books_check(http_base, rpc_timeout),
            ]

        jobs.append(one_http())
    results = await asyncio.gather(*jobs)
    return [check for group in results for check in group]


def default_http_base(health_port: int) -> str:
    return f"http://localhost:{health_port}"


def database_url_of(base: str) -> str:
    """`http://host:3001[/anything]` → `http://host:3001/health/database`."""
    return _health_page(base, "/health/database")


async def service_pool(base: str, rpc_timeout: float = 3.0) -> dict[str, object]:
    """The running server's own connection pool (its /health/database `pool`: sizes, in
    use, waiting, utilisation), as the server sees it; `error` when it cannot be read."""
    url = database_url_of(base)
    try:
        status, body = await _get_json(url, rpc_timeout)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        detail = "timed out" if isinstance(exc, TimeoutError) else first_line(str(exc))
        return {"url": url, "error": detail or type(exc).__name__}
    pool = body.get("pool") if isinstance(body, dict) else None
    if not isinstance(pool, dict):
        return {"url": url, "error": f"HTTP {status}: no pool figures"}
    return {"url": url, **pool}
