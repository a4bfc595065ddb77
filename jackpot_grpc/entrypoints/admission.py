"""Admission of every unary call, before the servicer sees it.

- Request bytes that do not parse are INVALID_ARGUMENT (grpc.aio would answer UNKNOWN).
- While the database is known to be down (the health probe says so), jackpot calls fail
  at once with UNAVAILABLE instead of each waiting out the pool timeout.
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

from jackpot_grpc.domain.errors import ShuttingDown, Unavailable
from jackpot_grpc.entrypoints.errors import to_status
from jackpot_grpc.entrypoints.interceptors import Continuation


class _Malformed:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class AdmissionInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, services: Collection[str], database_up: Callable[[], bool | None]) -> None:
        self._prefixes = tuple(f"/{s}/" for s in services)
        self._database_up = database_up
        self.closing = False
        self.in_flight = 0
        self._last_arrival = time.monotonic()
        # One wrapped handler per method, built on its first call (not on every call).
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        wrapped = self._wrapped.get(details.method)
        if wrapped is None:  # only registered methods get here: the dict stays small
            wrapped = self._wrapped[details.method] = grpc.unary_unary_rpc_method_handler(
                self._admit(handler.unary_unary, details.method.startswith(self._prefixes)),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return wrapped

    def _admit(self, behavior: Callable[..., Any], guarded: bool) -> Callable[..., Any]:
        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
            if not guarded:
                return await behavior(request, context)
            self._last_arrival = time.monotonic()
            if self.closing:
                await context.abort_with_status(to_status(ShuttingDown("server is shutting down")))
            if self._database_up() is False:
                await context.abort_with_status(to_status(Unavailable("database unavailable")))
            self.in_flight += 1
            try:
                return await behavior(request, context)
            finally:
                self.in_flight -= 1

        return admitted

    async def drain(self, budget: float, quiet: float = 0.1) -> bool:
        """Close the gate; wait until nothing runs and nothing arrived for `quiet` seconds."""
        self.closing = True
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            if self.in_flight == 0 and time.monotonic() - self._last_arrival >= quiet:
                return True
            await asyncio.sleep(0.02)
        return False


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        if deserialize is None:
            return data
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, invalid UTF-8 in a string field, ...
            return _Malformed(f"request does not parse: {type(exc).__name__}")

    return parse
