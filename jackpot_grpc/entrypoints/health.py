"""grpc.health.v1: readiness follows the database, liveness follows the process.

Readiness ("" and "jackpot.v1.JackpotService") is SERVING while the probe's query answers.
The probe has its own connection (not the pool calls use) and flips to NOT_SERVING only
after JACKPOT_HEALTH_FAILURES consecutive failures: one slow answer on a busy machine must
not turn away every call the database could serve. One success flips it back.
"liveness" is SERVING from start to shutdown whatever the database does, so a liveness
probe never restarts a process during a database blip.
"""

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
LIVENESS = "liveness"
READINESS = ("", JACKPOT_SERVICE)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DatabaseHealthProbe:
    """Pings the database every `interval` seconds and flips readiness both ways."""

    def __init__(
        self,
        health: HealthServicer,
        ping: Callable[[], Awaitable[None]],
        interval: float,
        timeout: float = 1.0,
        failures_to_flip: int = 3,
    ) -> None:
        self._health = health
        self._ping = ping
        self._timeout = timeout
        self._failures_to_flip = max(1, failures_to_flip)
        self.consecutive_failures = 0
        self._loop = Periodic("database-health-probe", self.check, interval)
        self.healthy: bool | None = None
        self.last_latency_ms: float | None = None
        self.last_error: str | None = None
        self.last_checked: float | None = None

    async def check(self) -> bool:
        """One probe; returns whether readiness is SERVING afterwards."""
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
        self.consecutive_failures = 0 if ok else self.consecutive_failures + 1
        tolerated = self.consecutive_failures < self._failures_to_flip
        if not ok and self.healthy and tolerated:
            log.warning(
                "database probe failed (%d of %d before NOT_SERVING): %s",
                self.consecutive_failures,
                self._failures_to_flip,
                self.last_error,
            )
            return bool(self.healthy)
        if ok != self.healthy:
            log.log(
                logging.INFO if ok else logging.ERROR,
                "database %s (%s)",
                "reachable: SERVING" if ok else "unreachable: NOT_SERVING",
                self.last_error or "ok",
            )
            status = SERVING if ok else NOT_SERVING
            for service in READINESS:
                await self._health.set(service, status)
        self.healthy = ok
        return ok

    async def set_live(self) -> None:
        """Liveness is SERVING from start until grpc's graceful shutdown turns all off."""
        await self._health.set(LIVENESS, SERVING)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
