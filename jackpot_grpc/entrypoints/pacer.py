"""Pacing of requests on the health port, which shares the event loop with gRPC.

Even a cheap answer costs the event loop a few hundred microseconds, so fifty clients
asking in a loop (thousands of requests a second) would starve the gRPC calls of the same
process. Refusing them does not help: a refused client asks again at once, and the
refusal costs as much as the answer. So excess requests are delayed instead: each class
of endpoint serves at most `rate` requests a second (a burst of `burst` at once), and a
request beyond that waits its turn, which costs nothing while it sleeps. A closed-loop
client is thereby slowed to the rate. Only a request that would wait longer than
`max_wait` is refused (503 with Retry-After); the connection cap bounds how many wait.

The schedule is GCRA (the virtual-scheduling form of a token bucket): one "theoretical
arrival time" per class, no timers, O(1) per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Pacer:
    def __init__(
        self,
        rate: float,
        burst: int,
        max_wait: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = 1.0 / rate
        self._tolerance = self._interval * max(0, burst - 1)
        self._max_wait = max_wait
        self._clock = clock
        self._tat = 0.0  # when the schedule is next free

    def reserve(self) -> float | None:
        """Seconds this request must wait for its turn, or None past `max_wait` (refused;
        nothing is reserved)."""
        now = self._clock()
        tat = max(self._tat, now)
        wait = max(0.0, tat - self._tolerance - now)
        if wait > self._max_wait:
            return None
        self._tat = tat + self._interval
        return wait

    async def turn(self) -> bool:
        """Wait for this request's turn; False if it would wait too long."""
        wait = self.reserve()
        if wait is None:
            return False
        if wait > 0:
            await asyncio.sleep(wait)
        return True
