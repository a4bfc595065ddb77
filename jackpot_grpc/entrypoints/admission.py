"""Admission of every unary call, before the servicer sees it.

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
from collections.abc import Callable, Collection
from typing import Any

import grpc

from jackpot_grpc.domain.errors import DeadlineTooShort, Overloaded, ShuttingDown, Unavailable
from jackpot_grpc.entrypoints.interceptors import (
    Behavior,
    Continuation,
    Deserializer,
    WrappedUnaryHandlers,
)
from jackpot_grpc.entrypoints.status_mapping import to_status
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


class _Malformed:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class AdmissionInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        services: Collection[str],
        database_up: Callable[[], bool | None],
        *,
        max_in_flight: int = 512,
        per_connection: int = 64,
        refusals: Refusals | None = None,
    ) -> None:
        self._prefixes = tuple(f"/{s}/" for s in services)
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
        # Every registered method: a malformed request of any service is INVALID_ARGUMENT.
        self._admitted_handlers = WrappedUnaryHandlers(self._admit, _tolerant)

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        # Only registered methods get here: the cache stays small.
        return self._admitted_handlers.get(details.method, handler)

    def _admit(self, full_name: str, behavior: Behavior) -> Behavior:
        # Only the jackpot calls are gated; the others are only checked for malformed bytes.
        method = full_name if full_name.startswith(self._prefixes) else None

        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Malformed):
                self.refusals.count(LAYER, "malformed_request")
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
            if method is None:
                return await behavior(request, context)
            started = self._last_arrival = time.monotonic()
            peer = context.peer() or "unknown"
            refusal = self._refusal(method, peer, context.time_remaining())
            if refusal is not None:
                reason, error = refusal
                self.refusals.count(LAYER, reason)
                await context.abort_with_status(to_status(error))
            self.in_flight += 1
            self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
            try:
                return await behavior(request, context)
            finally:
                self.in_flight -= 1
                left = self._by_peer[peer] - 1
                if left:
                    self._by_peer[peer] = left
                else:
                    del self._by_peer[peer]
                seconds = time.monotonic() - started
                before = self._seconds.get(method, seconds)
                self._seconds[method] = before + _EWMA_WEIGHT * (seconds - before)

        return admitted

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


def _tolerant(deserialize: Deserializer | None) -> Deserializer:
    def parse(data: bytes) -> Any:
        if deserialize is None:
            return data
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, invalid UTF-8 in a string field, ...
            return _Malformed(f"request does not parse: {type(exc).__name__}")

    return parse
