"""The REST gateway: an aiohttp app whose routes come from the proto, over one gRPC channel
that balances over every server of JACKPOT_GRPC_TARGET (jackpot_grpc.transport.balancing).

(The app's wiring: routes, streaming, middleware order, start and stop. Long because the
order is the point, and it reads top to bottom in one file.)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc
from aiohttp import web
from google.protobuf.descriptor import ServiceDescriptor
from jackpot.v1 import jackpot_pb2

from jackpot_grpc.config import Settings
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.gateway import forwarding, metrics_proxy, stream_framing
from jackpot_grpc.gateway.caller_limit import CallerFailureLimit
from jackpot_grpc.gateway.http_errors import GatewayError, rpc_error_response
from jackpot_grpc.gateway.middleware import MAX_BODY_BYTES, body_limit_of, json_errors
from jackpot_grpc.gateway.open_guard import OpenServerError, OpenServerGuard
from jackpot_grpc.gateway.openapi import openapi_document
from jackpot_grpc.gateway.routes import Route, build_routes
from jackpot_grpc.gateway.transcode import build_request, forwarded_metadata, response_json
from jackpot_grpc.observability.refusals import Refusals
from jackpot_grpc.observability.telemetry import (
    GATEWAY_OTEL_SERVICE_NAME,
    Telemetry,
    setup_telemetry,
)
from jackpot_grpc.runtime.signals import wait_for_signal
from jackpot_grpc.runtime.startup_gc import freeze_startup_objects
from jackpot_grpc.security.failure_throttle import FailureThrottle
from jackpot_grpc.security.open_mode import is_loopback
from jackpot_grpc.security.secret_rules import require_long_token
from jackpot_grpc.transport.balancing import balanced_channel_options, channel_target
from jackpot_grpc.transport.http_site import HttpLimits, body_guard, close_if_unread, start_site
from jackpot_grpc.transport.peer_address import LOOPBACK_PROXIES, Caller, TrustedProxies
from jackpot_grpc.transport.tls import channel_credentials

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

CALLS = web.AppKey("grpc_calls", dict)  # grpc path → unary-unary multicallable
OPENAPI_JSON = web.AppKey("openapi_json", str)
REFUSALS = web.AppKey("refusals", Refusals)  # the gateway's own: GET /metrics/gateway
CALLER_LIMIT = web.AppKey("caller_failure_limit", CallerFailureLimit)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", TrustedProxies)
GATEWAY_CREDENTIALS = web.AppKey("gateway_credentials", list)  # its own token's metadata
# Present when the gateway must not forward to a server in open mode (open_guard.py).
OPEN_GUARD = web.AppKey("open_server_guard", OpenServerGuard)


# How long a gateway that must check the server waits at start for its first answer; a
# server still down then is asked again in the background (calls get 503 meanwhile).
OPEN_SERVER_PROBE_WAIT = 5.0


def jackpot_services() -> list[ServiceDescriptor]:
    return [jackpot_pb2.DESCRIPTOR.services_by_name["JackpotService"]]


async def _admit(request: web.Request) -> tuple[Caller, web.Response | None]:
    """Who is calling, and the 429 when that caller is blocked for failing authentication;
    otherwise waits for the open-server guard (when there is one) to let the call go."""
    app = request.app
    caller = forwarding.http_caller(request.headers, request.remote, app[TRUSTED_PROXIES])
    refusal = app[CALLER_LIMIT].refusal(caller)
    if refusal is None:
        guard = app.get(OPEN_GUARD)
        if guard is not None:
            await guard.admit()
    return caller, refusal


def _call_metadata(
    request: web.Request, caller: Caller, *, traced: bool
) -> tuple[tuple[str, str | bytes], ...]:
    """What the gRPC call carries: the caller's metadata (less what only the gateway may
    say), whom it calls for, and the gateway's own credentials."""
    return (
        # Traced, the gRPC client instrumentation sends the gateway span's context.
        *forwarding.without_gateway_keys(
            forwarded_metadata(request.headers, trace_context=not traced)
        ),
        *forwarding.forwarded_for(request.headers, request.host, caller),
        *request.app[GATEWAY_CREDENTIALS],
    )


def _handler(
    route: Route, max_timeout: float | None, body_timeout: float, *, traced: bool
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        app = request.app
        caller, refusal = await _admit(request)
        if refusal is not None:
            return refusal
        body = b""
        if route.body:
            try:
                async with asyncio.timeout(body_timeout):  # a body sent slowly on purpose
                    body = await request.read()
            except TimeoutError:
                request.app[REFUSALS].count("http", "body_timeout")
                raise web.HTTPRequestTimeout(text="request body not received in time") from None
        message = build_request(
            route,
            body=body,
            query=request.query,
            path_params=request.match_info,
            headers=request.headers,
        )
        timeout = forwarding.call_timeout(request.headers, max_timeout)
        metadata = _call_metadata(request, caller, traced=traced)
        call = app[CALLS][route.grpc_path](message, metadata=metadata, timeout=timeout)
        try:
            reply = await call
        except grpc.aio.AioRpcError as error:
            app[CALLER_LIMIT].answered(caller, error.code())
            request[forwarding.RESPONSE_METADATA] = forwarding.response_headers(
                error.initial_metadata(), error.trailing_metadata()
            )
            raise
        request[forwarding.RESPONSE_METADATA] = forwarding.response_headers(
            await call.initial_metadata(), await call.trailing_metadata()
        )
        return web.Response(text=response_json(route, reply), content_type="application/json")

    handle.__name__ = f"{route.method.name}_handler"
    return handle


def _stream_handler(
    route: Route, keepalive: float, *, traced: bool
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A server-streaming rpc as SSE or newline-delimited JSON (gateway/stream_framing.py).

    Until the first message the call is answered like a unary one (an error is its HTTP
    status: 429 past a cap, 503 while the server stops); from then on each message is
    written as it comes, and an error ends the stream as its last item."""

    async def handle(request: web.Request) -> web.StreamResponse:
        app = request.app
        caller, refusal = await _admit(request)
        if refusal is not None:
            return refusal
        message = build_request(
            route,
            body=b"",
            query=request.query,
            path_params=request.match_info,
            headers=request.headers,
        )
        sse = stream_framing.wants_sse(request.headers)
        resume = stream_framing.resume_after(request.headers) if sse else None
        if resume is not None and stream_framing.RESUME_FIELD in message.DESCRIPTOR.fields_by_name:
            setattr(message, stream_framing.RESUME_FIELD, resume)
        metadata = _call_metadata(request, caller, traced=traced)
        # No deadline unless the caller sends Grpc-Timeout: a stream lasts.
        timeout = forwarding.call_timeout(request.headers, None)
        call = app[CALLS][route.grpc_path](message, metadata=metadata, timeout=timeout)
        try:
            item = await call.read()
        except grpc.aio.AioRpcError as error:
            app[CALLER_LIMIT].answered(caller, error.code())
            request[forwarding.RESPONSE_METADATA] = forwarding.response_headers(
                error.initial_metadata(), error.trailing_metadata()
            )
            if error.code() == grpc.StatusCode.CANCELLED:
                # Not the caller (still here): the server dropped a call it never took
                # (a flood of new streams). A retry helps, as after 503; an EventSource
                # would give up for good on 499.
                raise GatewayError(
                    grpc.StatusCode.UNAVAILABLE,
                    "the server dropped the stream before it started; retry with backoff",
                ) from None
            raise
        request[forwarding.RESPONSE_METADATA] = forwarding.response_headers(
            await call.initial_metadata(), None
        )
        response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
        response.content_type = stream_framing.SSE if sse else stream_framing.NDJSON
        await response.prepare(request)
        try:
            while item is not grpc.aio.EOF:
                text = response_json(route, item)
                if sse:
                    sequence = getattr(item, "sequence", None)
                    await response.write(stream_framing.event(text, sequence))
                else:
                    await response.write(stream_framing.ndjson_line("result", text))
                item = await _next_or_keepalive(call, request, response, keepalive, sse=sse)
        except grpc.aio.AioRpcError as error:
            status = json.loads(rpc_error_response(error).text or "{}")
            end = (
                stream_framing.error_event(status)
                if sse
                else stream_framing.ndjson_line("error", status)
            )
            await response.write(end)
        except (ConnectionError, _CallerGone):
            pass  # the caller went away: the gRPC call is cancelled below
        finally:
            call.cancel()
        return response

    handle.__name__ = f"{route.method.name}_stream_handler"
    return handle


class _CallerGone(Exception):
    pass


async def _next_or_keepalive(
    call: Any, request: web.Request, response: web.StreamResponse, keepalive: float, *, sse: bool
) -> Any:
    """The call's next message; meanwhile, every `keepalive` seconds, an SSE comment, and a
    check that the caller is still there (else _CallerGone)."""
    reading = asyncio.ensure_future(call.read())
    try:
        while True:
            done, _ = await asyncio.wait({reading}, timeout=keepalive)
            if done:
                return reading.result()
            transport = request.transport
            if transport is None or transport.is_closing():
                raise _CallerGone
            if sse:
                await response.write(stream_framing.KEEPALIVE)
    finally:
        if not reading.done():
            reading.cancel()


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(text=request.app[OPENAPI_JSON], content_type="application/json")


async def _gateway_metrics(request: web.Request) -> web.Response:
    """What this gateway refused (the server's figures are at /metrics)."""
    return web.json_response({"refusals": request.app[REFUSALS].summary()})


def _lifecycle(
    grpc_target: str,
    credentials: grpc.ChannelCredentials | None,
    routes: Sequence[Route],
    metrics_timeout: float,
    interceptors: Sequence[Any],
    open_server_probe_wait: float | None,
    own_metadata: Sequence[tuple[str, str]],
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def channel_and_session(app: web.Application) -> AsyncIterator[None]:
        """The channel and HTTP client live exactly as long as the app runs."""
        options = balanced_channel_options()
        channel = (
            grpc.aio.insecure_channel(
                grpc_target, options=options, interceptors=interceptors or None
            )
            if credentials is None
            else grpc.aio.secure_channel(
                grpc_target, credentials, options=options, interceptors=interceptors or None
            )
        )
        app[CALLS] = {
            route.grpc_path: (
                channel.unary_stream if route.server_streaming else channel.unary_unary
            )(
                route.grpc_path,
                request_serializer=route.request_class.SerializeToString,
                response_deserializer=route.response_class.FromString,
            )
            for route in routes
        }
        if open_server_probe_wait is not None:
            guard = OpenServerGuard(channel, metadata=own_metadata)
            try:
                await guard.start(open_server_probe_wait)
            except BaseException:
                await channel.close()
                raise
            app[OPEN_GUARD] = guard
        timeout = aiohttp.ClientTimeout(total=metrics_timeout)
        app[metrics_proxy.HTTP_SESSION] = aiohttp.ClientSession(timeout=timeout)
        try:
            yield
        finally:
            if OPEN_GUARD in app:
                await app[OPEN_GUARD].stop()
            await app[metrics_proxy.HTTP_SESSION].close()
            await channel.close()

    return channel_and_session


def _application(
    tracer_provider: TracerProvider | None, max_body_bytes: int, middlewares: list[Any]
) -> web.Application:
    """The app; traced, it is built while the aiohttp server instrumentation is on, which
    makes it an application with the tracing middleware first, and the instrumentation is
    turned off again at once, so no other application of the process is touched."""
    if tracer_provider is None:
        return web.Application(middlewares=middlewares, client_max_size=max_body_bytes)
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    instrumentor = AioHttpServerInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        return web.Application(middlewares=middlewares, client_max_size=max_body_bytes)
    finally:
        instrumentor.uninstrument()


def create_gateway_app(
    grpc_target: str,
    *,
    max_body_bytes: int,
    metrics_url: str,
    services: Sequence[ServiceDescriptor] | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    call_timeout: float | None = 30.0,
    metrics_timeout: float = 5.0,
    body_timeout: float = 10.0,
    version: str = "1.0.0",
    telemetry: Telemetry | None = None,
    trusted_proxies: TrustedProxies = LOOPBACK_PROXIES,
    gateway_token: str | None = None,
    auth_throttle: FailureThrottle | None = None,
    open_server_probe_wait: float | None = None,
    stream_keepalive: float = 15.0,
) -> web.Application:
    """Routes from the services' `google.api.http` annotations (default: JackpotService).

    `grpc_target` is any gRPC target or a list of addresses (balancing.channel_target;
    ValueError when it is neither). `credentials` switch the gRPC channel to TLS;
    `call_timeout` is each call's deadline and the most a `Grpc-Timeout` header can ask
    for. With `telemetry` tracing, every request gets a server span and every gRPC call a
    client span beneath it, whose context the service continues (REST → gRPC → SQL).

    `trusted_proxies` may tell the gateway who its HTTP callers are (X-Forwarded-For);
    `gateway_token` (a client with the gateway role) makes the server believe the gateway
    about them from any address. `auth_throttle` limits each caller's failed
    authentications (default: the service's 20 in 60 s, then 30 s of 429). With
    `open_server_probe_wait` set, the gateway refuses to front a server in open mode
    (open_guard.py), waiting that long at start for the server's first answer.
    """
    grpc_target = channel_target(grpc_target)
    routes = build_routes(jackpot_services() if services is None else services)
    refusals = Refusals()
    middlewares = [close_if_unread, json_errors, body_guard(body_limit_of, refusals)]
    tracer_provider = telemetry.tracer_provider if telemetry is not None else None
    app = _application(tracer_provider, max_body_bytes, middlewares)
    app.on_response_prepare.append(forwarding.add_response_metadata)
    app[MAX_BODY_BYTES] = max_body_bytes
    app[REFUSALS] = refusals
    app[TRUSTED_PROXIES] = trusted_proxies
    app[GATEWAY_CREDENTIALS] = forwarding.gateway_credentials(gateway_token)
    app[CALLER_LIMIT] = CallerFailureLimit(
        auth_throttle or FailureThrottle(20, 60.0, 30.0), refusals
    )
    app[metrics_proxy.METRICS_URL] = metrics_url
    app[metrics_proxy.IN_FLIGHT] = {}
    app[OPENAPI_JSON] = json.dumps(openapi_document(routes, version=version))
    # Keep one path's methods together so aiohttp answers 405 with the full Allow list.
    for path in dict.fromkeys(r.router_path for r in routes):
        for route in (r for r in routes if r.router_path == path):
            traced = tracer_provider is not None
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]] = (
                _stream_handler(route, stream_keepalive, traced=traced)
                if route.server_streaming
                else _handler(route, call_timeout, body_timeout, traced=traced)
            )
            app.router.add_route(route.http_method, path, handler)
    app.router.add_get("/metrics", metrics_proxy.metrics, allow_head=False)
    app.router.add_get("/metrics/gateway", _gateway_metrics, allow_head=False)
    app.router.add_get("/openapi.json", _openapi, allow_head=False)
    interceptors = telemetry.client_interceptors() if telemetry is not None else []
    app.cleanup_ctx.append(
        _lifecycle(
            grpc_target,
            credentials,
            routes,
            metrics_timeout,
            interceptors,
            open_server_probe_wait,
            # The check calls as the gateway itself: its role may call nothing.
            [("authorization", f"Bearer {gateway_token}")] if gateway_token else [],
        )
    )
    return app


@dataclass
class RunningGateway:
    runner: web.AppRunner
    port: int

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_gateway(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float = 10.0,
    limits: HttpLimits | None = None,
) -> RunningGateway:
    """Serve `app` on host:port (0: any free port) and report the port bound."""
    runner, bound = await start_site(
        app,
        host,
        port,
        shutdown_timeout=shutdown_timeout,
        limits=limits,
        refusals=app.get(REFUSALS),
    )
    return RunningGateway(runner, bound)


async def run_gateway(settings: Settings, *, metrics_url: str | None = None) -> None:
    """Serve the gateway on REST_HOST:REST_PORT until SIGTERM/SIGINT, then drain and stop."""
    require_long_token("JACKPOT_GATEWAY_TOKEN", settings.gateway.token)
    if settings.auth.allow_open and not is_loopback(settings.gateway.host):
        log.warning(
            "JACKPOT_ALLOW_OPEN=1: not checking whether the gRPC server requires credentials"
            " although REST_HOST=%s listens beyond loopback",
            settings.gateway.host,
        )
    telemetry = setup_telemetry(
        default_service_name=GATEWAY_OTEL_SERVICE_NAME, instrument_sql=False
    )
    try:
        await _serve_gateway(settings, metrics_url, telemetry)
    finally:
        telemetry.shutdown()


async def _serve_gateway(settings: Settings, metrics_url: str | None, telemetry: Telemetry) -> None:
    try:
        app = create_gateway_app(
            settings.grpc.target,
            max_body_bytes=settings.gateway.max_body_bytes,
            metrics_url=metrics_url or metrics_proxy.metrics_url(settings),
            credentials=channel_credentials(settings.tls),  # TLS when GRPC_TLS_CA is set
            call_timeout=settings.gateway.max_timeout,
            body_timeout=settings.http.body_timeout,
            telemetry=telemetry,
            trusted_proxies=settings.auth.trusted_proxies,
            gateway_token=settings.gateway.token,
            auth_throttle=FailureThrottle(
                settings.auth.failure_limit,
                settings.auth.failure_window,
                settings.auth.block_seconds,
            ),
            open_server_probe_wait=(
                None
                if settings.auth.allow_open or is_loopback(settings.gateway.host)
                else OPEN_SERVER_PROBE_WAIT
            ),
        )
    except ValueError as exc:  # a bad JACKPOT_GRPC_TARGET
        raise ConfigError(str(exc)) from None
    try:
        running = await start_gateway(
            app,
            settings.gateway.host,
            settings.gateway.port,
            shutdown_timeout=settings.process.shutdown_grace,
            limits=HttpLimits.from_settings(settings),
        )
    except OpenServerError as exc:
        raise ConfigError(str(exc)) from None
    log.info(
        "REST gateway listening on %s:%d → gRPC %s",
        settings.gateway.host,
        running.port,
        settings.grpc.target,
    )
    freeze_startup_objects()
    try:
        await wait_for_signal()
    finally:
        await running.stop()
        log.info("REST gateway stopped")
