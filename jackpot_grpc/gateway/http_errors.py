"""The one table from gRPC status codes to HTTP statuses, and the one JSON error shape.

As grpc-gateway (runtime/errors.go): the body is a google.rpc.Status in JSON,
`{"code": <grpc code>, "message": ..., "details": [{"@type": ..., ...}]}`.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

log = logging.getLogger(__name__)

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

# A few reasons answer a more precise HTTP status than their gRPC code's (ErrorInfo.reason).
# A key reused for another request is 422, as the IETF Idempotency-Key draft has it.
HTTP_STATUS_BY_REASON: dict[str, int] = {"IDEMPOTENCY_KEY_REUSED": 422}
# Shared with the service's ErrorInfo (jackpot_grpc.entrypoints.status_mapping).
ERROR_DOMAIN = "jackpot.v1"
INVALID_REQUEST = "INVALID_REQUEST"
RATE_LIMITED = "RATE_LIMITED"  # the server's reason for its own auth throttle, too
# What a client is told when the gRPC server cannot be reached at all: the transport's own
# text (addresses, TLS details) goes to the log only.
UNAVAILABLE_MESSAGE = "service unavailable"

# Errors raised by HTTP routing itself (grpc-gateway's DefaultRoutingErrorHandler): the HTTP
# status stays, the body carries the closest gRPC code.
ROUTING_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def http_status_of(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


class GatewayError(Exception):
    """An error the gateway itself detects; rendered by the error middleware."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        details: Sequence[dict[str, Any]] = (),
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)
        self.http_status = http_status_of(code) if http_status is None else http_status


def bad_request(message: str, violations: Sequence[tuple[str, str]] = ()) -> GatewayError:
    """400 INVALID_ARGUMENT, with ErrorInfo INVALID_REQUEST and a google.rpc.BadRequest
    naming each bad field."""
    details = [
        any_to_json(
            _packed(error_details_pb2.ErrorInfo(reason=INVALID_REQUEST, domain=ERROR_DOMAIN))
        )
    ]
    if violations:
        details.append(
            any_to_json(
                _packed(
                    error_details_pb2.BadRequest(
                        field_violations=[
                            error_details_pb2.BadRequest.FieldViolation(
                                field=field, description=description
                            )
                            for field, description in violations
                        ]
                    )
                )
            )
        )
    return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, message, details)


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def any_to_json(detail: any_pb2.Any) -> dict[str, Any]:
    """A detail with "@type"; one of a type this process cannot decode stays base64."""
    try:
        return json_format.MessageToDict(detail)
    except (TypeError, KeyError, json_format.Error):
        return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode()}


def error_response(
    http_status: int,
    code: grpc.StatusCode,
    message: str,
    details: Sequence[dict[str, Any]] = (),
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"code": code.value[0], "message": message, "details": list(details)}
    return web.Response(
        status=http_status,
        text=json.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def gateway_error_response(error: GatewayError) -> web.Response:
    return error_response(error.http_status, error.code, error.message, error.details)


def _rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    try:
        status: status_pb2.Status | None = rpc_status.from_call(error)
    except ValueError:  # details disagree with code/message: trust the plain status
        log.warning("inconsistent rich status from upstream: %s", error)
        return None
    return status


def _retry_after(details: Sequence[any_pb2.Any]) -> dict[str, str]:
    for detail in details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):  # False for any other detail type
            seconds = info.retry_delay.ToNanoseconds() / 1e9
            return {"Retry-After": str(max(1, math.ceil(seconds)))}
    return {}


def _reason(details: Sequence[any_pb2.Any]) -> str | None:
    for detail in details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return None


def rpc_error_response(error: grpc.aio.AioRpcError) -> web.Response:
    """The gRPC status as HTTP, with the rich status's details (ErrorInfo, BadRequest,
    RetryInfo...) passed through; the HTTP status by reason first, then by code."""
    code: grpc.StatusCode = error.code()
    message: str = error.details() or ""
    rich = _rich_status(error)
    details = list(rich.details) if rich is not None else []
    if code == grpc.StatusCode.UNAVAILABLE and rich is None:
        # The service always sends details; none means the transport failed on the way.
        log.warning("gRPC upstream unavailable: %s", message)
        message = UNAVAILABLE_MESSAGE
    reason = _reason(details)
    http_status = HTTP_STATUS_BY_REASON.get(reason or "") or http_status_of(code)
    headers = _retry_after(details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = 'Bearer realm="jackpot"'  # RFC 6750: how to retry
    return error_response(
        http_status,
        code,
        message,
        [any_to_json(d) for d in details],
        headers=headers or None,
    )


def http_exception_response(exc: web.HTTPException, message: str | None = None) -> web.Response:
    """aiohttp's own 404/405/413... in the JSON shape, keeping headers such as Allow."""
    code = ROUTING_CODES.get(exc.status) or next(
        (c for c, s in HTTP_STATUS.items() if s == exc.status),
        grpc.StatusCode.INTERNAL if exc.status >= 500 else grpc.StatusCode.INVALID_ARGUMENT,
    )
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return error_response(exc.status, code, message or exc.reason, headers=headers or None)


def rate_limited_response(message: str, retry_after: float) -> web.Response:
    """429 RESOURCE_EXHAUSTED the gateway answers itself, shaped like the server's
    (ErrorInfo RATE_LIMITED, RetryInfo) with `Retry-After`."""
    seconds = max(1, math.ceil(retry_after))
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromSeconds(seconds)
    details = [
        any_to_json(_packed(error_details_pb2.ErrorInfo(reason=RATE_LIMITED, domain=ERROR_DOMAIN))),
        any_to_json(_packed(retry)),
    ]
    return error_response(
        429,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        message,
        details,
        headers={"Retry-After": str(seconds)},
    )
