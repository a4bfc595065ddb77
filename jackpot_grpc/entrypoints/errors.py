"""The one table from domain errors to gRPC status codes, with rich details (grpcio-status)."""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from jackpot_grpc.domain.errors import (
    DomainError,
    InsufficientPool,
    InvalidArgument,
    LockTimeout,
    OutOfRange,
    Overloaded,
    PermissionDenied,
    PoolNotFound,
    Unauthenticated,
    Unavailable,
    VersionConflict,
)

log = logging.getLogger(__name__)

STATUS_CODES: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    InsufficientPool: grpc.StatusCode.FAILED_PRECONDITION,
    OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    PoolNotFound: grpc.StatusCode.NOT_FOUND,
    VersionConflict: grpc.StatusCode.ABORTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}

# Callers that may simply retry (with the same idempotency key) are told when.
RETRY_AFTER_SECONDS: dict[type[DomainError], float] = {
    LockTimeout: 0.2,
    Unavailable: 1.0,
    Overloaded: 0.1,
}

# google.rpc.ErrorInfo: a stable reason a client can switch on (AIP-193).
ERROR_DOMAIN = "jackpot.v1"
REASONS: dict[type[DomainError], str] = {LockTimeout: "LOCK_TIMEOUT"}


def status_code_of(exc: BaseException) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(exc: BaseException) -> grpc.Status:
    """A gRPC status for any exception; unexpected ones become INTERNAL, never UNKNOWN."""
    code = status_code_of(exc)
    if isinstance(exc, DomainError):
        message = exc.message
    else:
        log.error("unexpected error: %s: %s", type(exc).__name__, exc, exc_info=exc)
        message = "internal error"
    details = []
    if isinstance(exc, InvalidArgument):
        details.append(
            _packed(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in exc.violations
                    ]
                )
            )
        )
    reason = next((r for c, r in REASONS.items() if isinstance(exc, c)), None)
    if reason is not None:
        details.append(_packed(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)))
    retry = next((s for c, s in RETRY_AFTER_SECONDS.items() if isinstance(exc, c)), None)
    if retry is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry * 1e9))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return rpc_status.to_status(proto)
