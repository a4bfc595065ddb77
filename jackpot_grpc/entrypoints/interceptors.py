"""Times every unary jackpot RPC and records its method, final status code and latency.

The latency is the handler's time on the server (after deserialisation, before the
response is written). Only the methods of the measured services are timed: load-balancer
health checks and reflection would otherwise drown the business traffic's figures.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import grpc

from jackpot_grpc.observability.metrics import RequestMetrics

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]
Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]
Recorder = Callable[[str, grpc.StatusCode, float], None]
Deserializer = Callable[[bytes], Any]


class WrappedUnaryHandlers:
    """One wrapped unary handler per method, built on its first call (not on every call).

    `wrap(method, behavior)` is what the interceptor runs instead of the handler (`method`
    is the full name, /package.Service/Method); `request_deserializer`, when given, turns
    the handler's deserializer into the one the wrapped handler uses.
    """

    def __init__(
        self,
        wrap: Callable[[str, Behavior], Behavior],
        request_deserializer: Callable[[Deserializer | None], Deserializer] | None = None,
        *,
        streaming: bool = False,
    ) -> None:
        self._streaming = streaming  # unary-stream handlers written with context.write
        self._wrap = wrap
        self._request_deserializer = request_deserializer
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def get(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The wrapped `handler` (a unary-unary one) of `method`."""
        wrapped = self._handlers.get(method)
        if wrapped is None:
            deserializer = handler.request_deserializer
            if self._request_deserializer is not None:
                deserializer = self._request_deserializer(deserializer)
            if self._streaming:
                wrapped = self._handlers[method] = grpc.unary_stream_rpc_method_handler(
                    self._wrap(method, handler.unary_stream),
                    request_deserializer=deserializer,
                    response_serializer=handler.response_serializer,
                )
                return wrapped
            wrapped = self._handlers[method] = grpc.unary_unary_rpc_method_handler(
                self._wrap(method, handler.unary_unary),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return wrapped


def method_name(full_name: str) -> str:
    """`Method` of /package.Service/Method."""
    return full_name.rsplit("/", 1)[-1]


def final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status the caller sees: the one set on the context, or what the error implies."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if error is None or isinstance(error, grpc.aio.AbortError):
        return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN
    if isinstance(error, asyncio.CancelledError):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN  # what grpc answers for an exception that escapes


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        metrics: RequestMetrics,
        services: Collection[str],
        also_record: Recorder | None = None,
    ) -> None:
        self._metrics = metrics
        self._also_record = also_record  # e.g. OpenTelemetry's rpc.server.call.duration
        self._prefixes = tuple(f"/{s}/" for s in services)
        self._timed_handlers = WrappedUnaryHandlers(self._timed)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        full_name: str = handler_call_details.method
        if (
            handler is None
            or handler.unary_unary is None
            or not full_name.startswith(self._prefixes)
        ):
            return handler
        return self._timed_handlers.get(full_name, handler)

    def _timed(self, full_name: str, behavior: Behavior) -> Behavior:
        method = method_name(full_name)
        started_call, record = self._metrics.started, self._metrics.record
        also_record = self._also_record

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started_call(method)
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                response = behavior(request, context)
                if inspect.isawaitable(response):
                    response = await response
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                seconds, code = time.perf_counter() - started, final_code(context, error)
                record(method, code, seconds)
                if also_record is not None:
                    also_record(method, code, seconds)

        return timed
