"""grpc.health.v1: readiness follows the database, liveness follows the process.

Readiness ("" and "jackpot.v1.JackpotService") is SERVING while the probe's query answers.
The probe has its own connection (not the pool calls use) and flips to NOT_SERVING only
after JACKPOT_HEALTH_FAILURES consecutive failures: one slow answer on a busy machine must
not turn away every call the database could serve. One success flips it back.
"liveness" is SERVING from start to shutdown whatever the database does, so a liveness
probe never restarts a process during a database blip, nor one started during an outage.
While readiness is NOT_SERVING the probe backs off: each failure doubles the wait before
the next try, up to MAX_BACKOFF, so a long outage is not knocked on every interval and
the database is seen back within MAX_BACKOFF of answering.

Readiness covers writes too (docs/DEPLOY.md, "Replication and failover"): after the read,
the probe commits a heartbeat row within a bound unless a write of this process committed
within the last interval, and the oldest contribution batch in flight may be no older
than JACKPOT_BATCH_AGE_LIMIT (past it readiness turns NOT_SERVING at once: a commit is
stuck). Every write this process commits counts as a successful probe, so readiness comes
back with the first commit, not at the next probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from jackpot_grpc.contract.names import JACKPOT_SERVICE
from jackpot_grpc.jobs.periodic import Periodic

log = logging.getLogger(__name__)

LIVENESS = "liveness"
READINESS = ("", JACKPOT_SERVICE)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# The longest wait between two tries while the database is down (s; the interval itself,
# when longer). Below the 5 s after which /health calls the probe's answer stale.
MAX_BACKOFF = 3.0


class DatabaseHealthProbe:
    """Pings the database every `interval` seconds and flips readiness both ways."""

    def __init__(
        self,
        health: health_aio.HealthServicer,
        ping: Callable[[], Awaitable[None]],
        interval: float,
        timeout: float = 1.0,
        failures_to_flip: int = 3,
        *,
        write: Callable[[], Awaitable[None]] | None = None,
        batch_age: Callable[[], float | None] | None = None,
        batch_age_limit: float = 0.0,
    ) -> None:
        self._health = health
        self._ping = ping
        self._write = write
        self._batch_age = batch_age
        self._batch_age_limit = batch_age_limit
        self.last_write_ok: float | None = None  # monotonic time of the last write committed
        self.stuck_batch_seconds: float | None = None  # the in-flight batch past its limit
        self._flip: asyncio.Task[None] | None = None
        self._publishing = asyncio.Lock()
        self._reads_ok = False  # the last probe's read answered (only a write failed)
        self._timeout = timeout
        self._failures_to_flip = max(1, failures_to_flip)
        self._interval = interval
        self.consecutive_failures = 0
        self._loop = Periodic("database-health-probe", self.check, self.next_delay)
        self.healthy: bool | None = None
        self.last_latency_ms: float | None = None
        self.last_error: str | None = None
        self.last_checked: float | None = None

    def write_succeeded(self) -> None:
        """A write of this process committed (on the event loop): the database takes
        writes now, whatever the last probe found. Judged on the loop's next turn: a
        contribution batch's own commit is reported from inside that batch (with
        JACKPOT_BATCH_EXECUTOR=loop), which counts as in flight until control is back in
        the batcher, with no await in between."""
        self.last_write_ok = time.monotonic()
        if self.healthy is False:
            asyncio.get_running_loop().call_soon(self._recovered_by_write)

    def _recovered_by_write(self) -> None:
        if self.healthy is False and self._stuck() is None:
            self.consecutive_failures = 0
            self.last_error = None
            self.healthy = True
            log.info("a write committed: SERVING")
            self._flip = asyncio.get_running_loop().create_task(self._publish())

    async def _publish(self) -> None:
        """Readiness as `healthy` says now. One publication at a time, each reading the
        state when it runs: whatever changed during an earlier one is published after it,
        so the last word is always the current state."""
        async with self._publishing:
            status = SERVING if self.healthy else NOT_SERVING
            for service in READINESS:
                await self._health.set(service, status)

    def _stuck(self) -> float | None:
        """The age of the batch in flight, when past its limit."""
        age = self._batch_age() if self._batch_age is not None else None
        limit = self._batch_age_limit
        return age if age is not None and limit > 0 and age > limit else None

    def _wrote_recently(self) -> bool:
        last = self.last_write_ok
        return last is not None and time.monotonic() - last <= max(self._interval, 0.1)

    async def _probe(self) -> None:
        self._reads_ok = False
        async with asyncio.timeout(self._timeout):
            await self._ping()
        self._reads_ok = True
        if self._write is not None and not self._wrote_recently():
            # The write bounds its own commit (closing, never cancelling, a commit that
            # does not answer); this timeout is only the backstop.
            async with asyncio.timeout(2 * self._timeout):
                await self._write()
            self.last_write_ok = time.monotonic()

    async def check(self) -> bool:
        """One probe; returns whether readiness is SERVING afterwards."""
        started = time.perf_counter()
        self.stuck_batch_seconds = stuck = self._stuck()
        try:
            if stuck is not None:
                raise TimeoutError(
                    f"a contribution batch has been in flight for {stuck:.1f} s"
                    f" (JACKPOT_BATCH_AGE_LIMIT {self._batch_age_limit:g} s)"
                )
            await self._probe()
        except Exception as exc:  # any failure means "not serving", and is reported
            self.last_error = f"{type(exc).__name__}: {exc}"
            ok = False
        else:
            self.last_latency_ms = (time.perf_counter() - started) * 1000
            self.last_error = None
            ok = True
        self.last_checked = time.time()
        self.consecutive_failures = 0 if ok else self.consecutive_failures + 1
        # A stuck batch is already a failure that lasted the age limit: no grace.
        tolerated = stuck is None and self.consecutive_failures < self._failures_to_flip
        if not ok and self.healthy and tolerated:
            log.warning(
                "database probe failed (%d of %d before NOT_SERVING): %s",
                self.consecutive_failures,
                self._failures_to_flip,
                self.last_error,
            )
            return bool(self.healthy)
        if ok == self.healthy:
            return ok
        log.log(
            logging.INFO if ok else logging.ERROR,
            "database %s (%s)",
            "reachable: SERVING" if ok else "unreachable: NOT_SERVING",
            self.last_error or "ok",
        )
        # The state first, then the publication: a write that commits while it is being
        # published sees the flip (write_succeeded) and is published after it.
        self.healthy = ok
        await self._publish()
        return bool(self.healthy)  # a write may have turned it back meanwhile

    def next_delay(self) -> float:
        """The interval while SERVING (a failure must flip readiness promptly); while
        NOT_SERVING, doubled per failure up to MAX_BACKOFF."""
        if self.healthy is not False or self._reads_ok:
            # A database that answers but cannot commit (a synchronous standby gone) is
            # probed every interval: its writes come back the moment the standby does.
            return self._interval
        doublings = min(self.consecutive_failures - 1, 16)
        backoff: float = self._interval * 2.0**doublings
        return min(backoff, max(self._interval, MAX_BACKOFF))

    async def set_live(self) -> None:
        """Liveness is SERVING from start until grpc's graceful shutdown turns all off."""
        await self._health.set(LIVENESS, SERVING)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
