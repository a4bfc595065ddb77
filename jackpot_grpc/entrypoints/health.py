"""grpc.health.v1 follows the database: SERVING only while a probe query answers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from jackpot.v1 import jackpot_pb2

from jackpot_grpc.entrypoints.periodic import Periodic

log = logging.getLogger(__name__)

# The health service name of JackpotService (its fully qualified gRPC name).
JACKPOT_SERVICE = jackpot_pb2.DESCRIPTOR.services_by_name["JackpotService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DatabaseHealthProbe:
    """Pings the database every `interval` seconds and flips health both ways."""

    def __init__(
        self,
        health: HealthServicer,
        ping: Callable[[], Awaitable[None]],
        interval: float,
        timeout: float = 1.0,
    ) -> None:
        self._health = health
        self._ping = ping
        self._timeout = timeout
        self._loop = Periodic("database-health-probe", self.check, interval)
        self.healthy: bool | None = None
        self.last_latency_ms: float | None = None
        self.last_error: str | None = None
        self.last_checked: float | None = None

    async def check(self) -> bool:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                await self._ping()
        except Exception as exc:  # any failure means "not serving", and is reported
            self.last_error = f"{type(exc).__name__}: {exc}"
            ok = False
        else:
            self.last_latency_ms = (time.perf_counter() - started) * 1000
            self.last_error = None
            ok = True
        self.last_checked = time.time()
        if ok != self.healthy:
            log.log(
                logging.INFO if ok else logging.ERROR,
                "database %s (%s)",
                "reachable: SERVING" if ok else "unreachable: NOT_SERVING",
                self.last_error or "ok",
            )
            status = SERVING if ok else NOT_SERVING
            await self._health.set("", status)
            await self._health.set(JACKPOT_SERVICE, status)
        self.healthy = ok
        return ok

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
