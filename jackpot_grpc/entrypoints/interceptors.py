"""The one server interceptor every call goes through, doing in one pass what a chain of
four did (call intake, metrics, authentication, admission).

For each call, in this order:
- intake: every call the application takes from gRPC core is counted
  (entrypoints/core_calls.py), whatever happens to it next;
- metrics: the jackpot unary methods are timed, by method and final status code (the
  handler's time on the server, after deserialisation, before the response is written).
  Load-balancer health checks and reflection are not: they would drown the business
  traffic's figures;
- authentication and roles (entrypoints/auth.py), jackpot methods only, unless the server
  runs open: the handler runs as the client found (entrypoints/identity.py);
- admission (entrypoints/admission.py): a request that does not parse is INVALID_ARGUMENT
  for every unary method of every service; jackpot calls pass the gate (overload,
  database down, deadline too short, shutting down).

One wrapped handler per method is built on its method's first call. Fusing them saves what
each layer cost on its own: an extra coroutine and await per layer, the peer read twice,
and the handler lookup through four continuations.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from contextvars import Token
from typing import Any

import grpc

from jackpot_grpc.domain.errors import DomainError
from jackpot_grpc.entrypoints.admission import Admission, Malformed, tolerant
from jackpot_grpc.entrypoints.auth import Authenticator
from jackpot_grpc.entrypoints.core_calls import CallIntake
from jackpot_grpc.entrypoints.identity import Client, act_as, acting_as, stop_acting
from jackpot_grpc.entrypoints.status_mapping import to_status
from jackpot_grpc.observability.metrics import RequestMetrics

log = logging.getLogger(__name__)

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]
Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]
Recorder = Callable[[str, grpc.StatusCode, float], None]


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


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        services: Collection[str],
        *,
        metrics: RequestMetrics,
        auth: Authenticator,
        admission: Admission,
        intake: CallIntake,
        also_record: Recorder | None = None,
    ) -> None:
        self._prefixes = tuple(f"/{s}/" for s in services)
        self._metrics = metrics
        self._auth = auth
        self._admission = admission
        self._intake = intake
        self._also_record = also_record  # e.g. OpenTelemetry's rpc.server.call.duration
        # (method, guarded) → the wrapped handler: whether clients are checked is read on
        # every call, as the clients file may come and go.
        self._handlers: dict[tuple[str, bool], grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        self._intake.taken += 1
        handler = await continuation(details)
        if handler is None:
            return None
        key = (details.method, not self._auth.open)
        wrapped = self._handlers.get(key)
        if wrapped is None:
            wrapped = self._wrap(key[0], handler, guarded=key[1])
            if wrapped is not None:  # only methods with a handler get here: the cache stays small
                self._handlers[key] = wrapped
        return wrapped

    def _wrap(
        self, full_name: str, handler: grpc.RpcMethodHandler, *, guarded: bool
    ) -> grpc.RpcMethodHandler | None:
        jackpot = full_name.startswith(self._prefixes)
        if handler.unary_unary is not None:
            behavior = (
                self._jackpot_call(full_name, handler.unary_unary, guarded=guarded)
                if jackpot
                else self._parsed_call(handler.unary_unary)
            )
            return grpc.unary_unary_rpc_method_handler(
                behavior,
                request_deserializer=tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if not (jackpot and guarded):
            return handler  # streams of other services (health Watch, reflection)
        if handler.unary_stream is not None:  # WatchPools: authenticated, not timed or gated
            return grpc.unary_stream_rpc_method_handler(
                self._guarded_stream(full_name, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # No other kind streams; never let one through.
        log.error("refusing %s: only unary and server-streaming methods are guarded", full_name)
        return None

    def _parsed_call(self, behavior: Behavior) -> Behavior:
        """A unary method of another service (health Check): only its bytes are checked."""
        admission = self._admission

        async def parsed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Malformed):
                admission.malformed()
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
            return await behavior(request, context)

        return parsed

    def _jackpot_call(self, full_name: str, behavior: Behavior, *, guarded: bool) -> Behavior:
        """Timed, authenticated (when `guarded`), admitted: the whole path of a jackpot call."""
        method = method_name(full_name)
        started_call, record = self._metrics.started, self._metrics.record
        also_record = self._also_record
        authenticate = self._auth.authenticate
        admission = self._admission

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started_call(method)
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                peer = context.peer() or ""
                acting: Token[Client | None] | None = None
                if guarded:
                    try:
                        acting = act_as(authenticate(context, peer, method))
                    except DomainError as exc:
                        await context.abort_with_status(to_status(exc))
                        raise  # unreachable: abort_with_status raises
                try:
                    if isinstance(request, Malformed):
                        admission.malformed()
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
                    peer = peer or "unknown"
                    arrived = time.monotonic()
                    refused = admission.admit(full_name, peer, context.time_remaining(), arrived)
                    if refused is not None:
                        await context.abort_with_status(to_status(refused))
                    try:
                        return await behavior(request, context)
                    finally:
                        admission.leave(full_name, peer, arrived)
                finally:
                    if acting is not None:
                        stop_acting(acting)
            except BaseException as exc:
                error = exc
                raise
            finally:
                seconds, code = time.perf_counter() - started, final_code(context, error)
                record(method, code, seconds)
                if also_record is not None:
                    also_record(method, code, seconds)

        return call

    def _guarded_stream(self, full_name: str, behavior: Behavior) -> Behavior:
        method = method_name(full_name)
        authenticate = self._auth.authenticate

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                client = authenticate(context, context.peer() or "", method)
            except DomainError as exc:
                await context.abort_with_status(to_status(exc))
                raise  # unreachable: abort_with_status raises
            with acting_as(client):
                response = behavior(request, context)
                if inspect.isawaitable(response):
                    response = await response
                return response

        return guarded
