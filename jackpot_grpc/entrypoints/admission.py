"""Admission of every unary call, before the servicer sees it (the call interceptor,
entrypoints/interceptors.py, asks the gate kept here).

- Request bytes that do not parse are INVALID_ARGUMENT (grpc.aio would answer UNKNOWN).
- While the database is known to be down (the health probe says so), jackpot calls fail
  at once with UNAVAILABLE instead of each waiting out the pool timeout.
- Overload is answered early and explicitly: at most `max_in_flight` jackpot calls run at
  once, and at most `per_connection` from one connection; a connection with fewer than
  FAIR_SHARE calls running is still admitted past the global bound, so one flooding
  client cannot lock out the others. Excess calls get RESOURCE_EXHAUSTED with RetryInfo
  at once, before any work (grpc.aio's own `maximum_concurrent_rpcs` would instead stop
  taking calls, health checks included, until they end CANCELLED).
- A call whose deadline is shorter than the method's recent running time is refused up
  front (RESOURCE_EXHAUSTED, DEADLINE_TOO_SHORT): it would time out after using a slot.
- Every refusal is counted by reason (refusals, layer "admission").
- On shutdown, the gate closes: new jackpot calls get UNAVAILABLE (clients retry them
  elsewhere), calls already admitted finish, and `drain` returns once none is running and
  none has arrived for a moment. Only then is the server stopped, so grpc.aio never
  cancels a call it had received but not yet handed over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from jackpot_grpc.domain.errors import DeadlineTooShort, Overloaded, ShuttingDown, Unavailable
from jackpot_grpc.observability.refusals import Refusals

LAYER = "admission"
REASONS = (
    "shutting_down",
    "database_unavailable",
    "connection_in_flight_limit",
    "in_flight_limit",
    "deadline_too_short",
    "malformed_request",
)
FAIR_SHARE = 8  # calls a connection may always have running, whatever the global bound
# Smoothing of each method's running time: about the last 20 calls.
_EWMA_WEIGHT = 0.05

Deserializer = Callable[[bytes], Any]


class Malformed:
    """What a request that does not parse deserialises to: the call is answered
    INVALID_ARGUMENT with `reason` before any handler sees it."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Admission:
    """The gate's state: calls running (in all, per connection), each method's recent
    running time, and whether the gate is closing. The call interceptor
    (entrypoints/interceptors.py) asks it about every jackpot call."""

    def __init__(
        self,
        database_up: Callable[[], bool | None],
        *,
        max_in_flight: int = 512,
        per_connection: int = 64,
        refusals: Refusals | None = None,
    ) -> None:
        self._database_up = database_up
        self._max_in_flight = max_in_flight
        self._per_connection = per_connection
        self.refusals = Refusals() if refusals is None else refusals
        self.refusals.declare(LAYER, REASONS)
        self.closing = False
        self.in_flight = 0
        self._by_peer: dict[str, int] = {}
        self._seconds: dict[str, float] = {}  # method → smoothed running time
        self._last_arrival = time.monotonic()

    def malformed(self) -> None:
        """A request that did not parse was refused (any service's)."""
        self.refusals.count(LAYER, "malformed_request")

    def admit(
        self, method: str, peer: str, remaining: float | None, now: float
    ) -> Exception | None:
        """None: the call runs (`leave` must follow); else the error to answer, counted."""
        self._last_arrival = now
        refusal = self._refusal(method, peer, remaining)
        if refusal is not None:
            reason, error = refusal
            self.refusals.count(LAYER, reason)
            return error
        self.in_flight += 1
        self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
        return None

    def leave(self, method: str, peer: str, started: float) -> None:
        """An admitted call ended: its slot is free, its running time feeds the estimate."""
        self.in_flight -= 1
        left = self._by_peer[peer] - 1
        if left:
            self._by_peer[peer] = left
        else:
            del self._by_peer[peer]
        seconds = time.monotonic() - started
        before = self._seconds.get(method, seconds)
        self._seconds[method] = before + _EWMA_WEIGHT * (seconds - before)

    def _refusal(
        self, method: str, peer: str, remaining: float | None
    ) -> tuple[str, Exception] | None:
        """(reason, error) when this call must be turned away now, else None."""
        if self.closing:
            return "shutting_down", ShuttingDown("server is shutting down")
        if self._database_up() is False:
            return "database_unavailable", Unavailable("database unavailable")
        mine = self._by_peer.get(peer, 0)
        if mine >= self._per_connection:
            message = f"more than {self._per_connection} calls in flight on this connection"
            return "connection_in_flight_limit", Overloaded(f"{message}; retry with backoff")
        if self.in_flight >= self._max_in_flight and mine >= FAIR_SHARE:
            return "in_flight_limit", Overloaded("server is at capacity; retry with backoff")
        expected = self._seconds.get(method)
        if remaining is not None and expected is not None and remaining < expected:
            # Refusals must not freeze the estimate (nothing admitted would update it).
            self._seconds[method] = expected * (1 - _EWMA_WEIGHT)
            return "deadline_too_short", DeadlineTooShort(
                f"deadline too short: {remaining * 1000:.0f} ms left, calls take about"
                f" {expected * 1000:.0f} ms now"
            )
        return None

    async def drain(self, budget: float, quiet: float = 0.1) -> bool:
        """Close the gate; wait until nothing runs and nothing arrived for `quiet` seconds."""
        self.closing = True
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            if self.in_flight == 0 and time.monotonic() - self._last_arrival >= quiet:
                return True
            await asyncio.sleep(0.02)
        return False


def tolerant(deserialize: Deserializer | None) -> Deserializer:
    """`deserialize`, answering a Malformed instead of raising on bytes that do not parse."""

    def parse(data: bytes) -> Any:
        if deserialize is None:
            return data
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, invalid UTF-8 in a string field, ...
            return Malformed(f"request does not parse: {type(exc).__name__}")

    return parse
