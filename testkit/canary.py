"""What legitimate callers see while the service is abused.

Three open-loop probes (each request leaves on schedule, however long the last one
takes, so a stall shows as latency and failures, not as fewer requests):
gRPC Contribute at `contribute_rate` per second on its own channel, REST GET pools every
100 ms through the gateway, and GET /health every 250 ms on the health port. A request
fails when it errors or takes longer than `timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.ops.loadtest import percentile
from testkit.figures import latency_ms


@dataclass
class Probe:
    name: str
    latencies: list[float] = field(default_factory=list)  # every request, failed ones too
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    @property
    def ok_rate(self) -> float:
        return self.outcomes["OK"] / self.total if self.total else 0.0

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99) or 0.0

    def figures(self) -> dict[str, Any]:
        return {
            "requests": self.total,
            "ok_percent": round(100 * self.ok_rate, 2),
            "outcomes": dict(self.outcomes),
            "latency_ms": latency_ms(self.latencies),
        }


@dataclass
class CanaryResult:
    probes: list[Probe]

    def figures(self) -> dict[str, Any]:
        return {p.name: p.figures() for p in self.probes}

    def failures(self, min_ok: float = 0.99) -> list[str]:
        """What broke the bound, one line per probe (empty: the canary was fine). A request
        slower than the canary's `limit` failed; latency percentiles are figures to report
        (`figures()`), not a bound: on a shared machine they measure the machine."""
        problems = []
        for probe in self.probes:
            if probe.total == 0:
                problems.append(f"{probe.name}: no request was made")
            elif probe.ok_rate < min_ok:
                problems.append(
                    f"{probe.name}: {100 * probe.ok_rate:.2f}% OK, p99 {1000 * probe.p99:.0f} ms"
                    f" ({dict(probe.outcomes)})"
                )
        return problems


async def _every(
    period: float,
    stop: asyncio.Event,
    probe: Probe,
    call: Callable[[], Awaitable[str]],
    limit: float,
) -> None:
    """Start `call` every `period` seconds until `stop`; record each outcome and latency."""
    pending: set[asyncio.Task[None]] = set()

    async def one() -> None:
        started = time.monotonic()
        try:
            # A backstop: each call carries its own `limit` (gRPC deadline, HTTP timeout), so
            # the outcome is the call's own (DEADLINE_EXCEEDED, or a refusal that raced it).
            async with asyncio.timeout(limit + 1.0):
                outcome = await call()
        except TimeoutError:
            outcome = "TIMEOUT"
        except Exception as exc:
            outcome = type(exc).__name__
        probe.latencies.append(time.monotonic() - started)
        probe.outcomes[outcome] += 1

    next_at = time.monotonic()
    while not stop.is_set():
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
        next_at += period
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, next_at - time.monotonic())):
                await stop.wait()
    if pending:
        await asyncio.wait(pending, timeout=limit + 2)


@contextlib.asynccontextmanager
async def canary(
    grpc_target: str,
    rest_base: str,
    health_base: str,
    *,
    contribute_rate: float = 75.0,
    limit: float = 1.0,
    token: str | None = None,
) -> AsyncIterator[CanaryResult]:
    """Runs the three probes for as long as the block runs; the result fills as it goes.
    A request fails when it takes longer than `limit` seconds. With `token`, the gRPC and
    REST probes send it as a bearer token (a client of a closed service)."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    headers = {"Authorization": f"Bearer {token}"} if token else None
    grpc_probe, rest_probe = Probe("grpc_contribute"), Probe("rest_pools")
    health_probe = Probe("health")
    result = CanaryResult([grpc_probe, rest_probe, health_probe])
    stop = asyncio.Event()
    async with (
        grpc.aio.insecure_channel(grpc_target) as channel,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit)) as http,
    ):
        stub = jackpot_pb2_grpc.JackpotServiceStub(channel)

        async def contribute() -> str:
            request = pb.ContributeRequest(
                game_id="canary", wager_amount=100, idempotency_key=f"canary-{uuid.uuid4()}"
            )
            try:
                await stub.Contribute(request, timeout=limit, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                return str(exc.code().name)
            return "OK"

        def get(url: str) -> Callable[[], Awaitable[str]]:
            async def fetch() -> str:
                async with http.get(url, headers=headers) as response:
                    await response.read()
                    return "OK" if response.status == 200 else f"HTTP {response.status}"

            return fetch

        await stub.GetPools(
            pb.GetPoolsRequest(), timeout=5, metadata=metadata
        )  # connected before measuring
        tasks = [
            asyncio.create_task(_every(1 / contribute_rate, stop, grpc_probe, contribute, limit)),
            asyncio.create_task(
                _every(0.1, stop, rest_probe, get(f"{rest_base}/api/jackpot/pools"), limit)
            ),
            asyncio.create_task(
                _every(0.25, stop, health_probe, get(f"{health_base}/health"), limit)
            ),
        ]
        try:
            yield result
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
