"""Middlewares: every error leaves as JSON from one place, and oversized bodies stop early."""

from __future__ import annotations

import logging

import grpc
from aiohttp import web
from aiohttp.typedefs import Handler

from jackpot_grpc.gateway.errors import (
    GatewayError,
    error_response,
    gateway_error_response,
    http_exception_response,
    rpc_error_response,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)


def _routing_message(request: web.Request, exc: web.HTTPException) -> str | None:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"method {request.method} is not allowed on {request.path} (allowed: {allowed})"
    if isinstance(exc, web.HTTPNotFound):
        return f"no route for {request.method} {request.path}"
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = request.app[MAX_BODY_BYTES]
        return f"request body is larger than the limit of {limit} bytes"
    return None


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """gRPC errors by the status table; routing errors keep their HTTP status; no bare 500."""
    try:
        return await handler(request)
    except GatewayError as exc:
        return gateway_error_response(exc)
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_exception_response(exc, _routing_message(request, exc))
    except Exception:
        log.exception("unexpected gateway error on %s %s", request.method, request.path)
        return error_response(500, grpc.StatusCode.INTERNAL, "internal error")


@web.middleware
async def body_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """413 from Content-Length before reading; chunked bodies hit client_max_size on read."""
    length = request.content_length
    limit = request.app[MAX_BODY_BYTES]
    if length is not None and length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length)
    return await handler(request)
