"""Middlewares: every error leaves as JSON from one place, and unwanted bodies stop early.

The body bounds themselves (413 from the headers, 415 for a Content-Encoding, never a
byte read) are jackpot_grpc.transport.http_site's, shared with the health port; here is only how
much body each request may carry.
"""

from __future__ import annotations

import logging

import grpc
from aiohttp import web
from aiohttp.typedefs import Handler

from jackpot_grpc.gateway.http_errors import (
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
        limit = body_limit_of(request)
        if limit == 0:
            return f"{request.method} {request.path} takes no request body"
        return f"request body is larger than the limit of {limit} bytes"
    if isinstance(exc, web.HTTPUnsupportedMediaType):
        return exc.text
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


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def body_limit_of(request: web.Request) -> int:
    """REST_MAX_BODY_BYTES for a method that carries a body; none for the others."""
    return request.app[MAX_BODY_BYTES] if request.method in BODY_METHODS else 0
