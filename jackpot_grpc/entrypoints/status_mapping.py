"""The one table from domain errors to gRPC status codes and ErrorInfo reasons, with rich
details (grpcio-status). docs/ERRORS.md lists every reason and what a caller should do."""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from jackpot_grpc.domain.errors import (
    CommitOutcomeUnknown,
    DeadlineTooShort,
    DomainError,
    IdempotencyKeyReused,
    InsufficientPool,
    InvalidArgument,
    LeafNotInCheckpoint,
    LockTimeout,
    NoLedgerCheckpoint,
    OutOfRange,
    OverflowTargetCycle,
    Overloaded,
    PermissionDenied,
    PoolEmpty,
    PoolNotFound,
    PoolSuspended,
    RateLimited,
    RateSumExceeded,
    ShuttingDown,
    TooManyWatchers,
    Unauthenticated,
    Unavailable,
    VersionConflict,
    WatcherTooSlow,
)

log = logging.getLogger(__name__)

# google.rpc.ErrorInfo.domain of every error this service raises.
ERROR_DOMAIN = "jackpot.v1"
# The reason of an error no row below explains (answered INTERNAL).
INTERNAL_REASON = "INTERNAL"

# Every domain error: its gRPC code and its ErrorInfo reason (stable, UPPER_SNAKE).
ERRORS: dict[type[DomainError], tuple[grpc.StatusCode, str]] = {
    InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST"),
    RateSumExceeded: (grpc.StatusCode.INVALID_ARGUMENT, "RATE_SUM_EXCEEDED"),
    IdempotencyKeyReused: (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED"),
    InsufficientPool: (grpc.StatusCode.FAILED_PRECONDITION, "WIN_EXCEEDS_POOL"),
    PoolEmpty: (grpc.StatusCode.FAILED_PRECONDITION, "POOL_EMPTY"),
    PoolSuspended: (grpc.StatusCode.FAILED_PRECONDITION, "POOL_SUSPENDED"),
    OverflowTargetCycle: (grpc.StatusCode.FAILED_PRECONDITION, "OVERFLOW_TARGET_CYCLE"),
    OutOfRange: (grpc.StatusCode.OUT_OF_RANGE, "AMOUNT_OUT_OF_RANGE"),
    PoolNotFound: (grpc.StatusCode.NOT_FOUND, "POOL_NOT_FOUND"),
    LeafNotInCheckpoint: (grpc.StatusCode.OUT_OF_RANGE, "LEAF_NOT_IN_CHECKPOINT"),
    NoLedgerCheckpoint: (grpc.StatusCode.FAILED_PRECONDITION, "NO_LEDGER_CHECKPOINT"),
    VersionConflict: (grpc.StatusCode.ABORTED, "VERSION_CONFLICT"),
    Unavailable: (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"),
    LockTimeout: (grpc.StatusCode.UNAVAILABLE, "LOCK_TIMEOUT"),
    CommitOutcomeUnknown: (grpc.StatusCode.UNAVAILABLE, "COMMIT_OUTCOME_UNKNOWN"),
    ShuttingDown: (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN"),
    Overloaded: (grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED"),
    DeadlineTooShort: (grpc.StatusCode.RESOURCE_EXHAUSTED, "DEADLINE_TOO_SHORT"),
    Unauthenticated: (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
    PermissionDenied: (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
    RateLimited: (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED"),
    TooManyWatchers: (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_WATCHERS"),
    WatcherTooSlow: (grpc.StatusCode.RESOURCE_EXHAUSTED, "WATCHER_TOO_SLOW"),
}
STATUS_CODES: dict[type[DomainError], grpc.StatusCode] = {k: v[0] for k, v in ERRORS.items()}

# Callers that may simply retry (with the same idempotency key) are told when.
RETRY_AFTER_SECONDS: dict[type[DomainError], float] = {
    LockTimeout: 0.2,
    Unavailable: 1.0,
    Overloaded: 0.1,
    RateLimited: 30.0,  # the default JACKPOT_AUTH_BLOCK_SECONDS
    LeafNotInCheckpoint: 10.0,  # the default JACKPOT_CHECKPOINT_INTERVAL
}


def error_kind(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """(code, reason) of the nearest class in the table; INTERNAL for anything else."""
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return grpc.StatusCode.INTERNAL, INTERNAL_REASON


def status_code_of(exc: BaseException) -> grpc.StatusCode:
    return error_kind(exc)[0]


def reason_of(exc: BaseException) -> str:
    return error_kind(exc)[1]


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(exc: BaseException) -> grpc.Status:
    """A gRPC status for any exception; unexpected ones become INTERNAL, never UNKNOWN."""
    code, reason = error_kind(exc)
    if isinstance(exc, DomainError):
        message = exc.message
    else:
        log.error("unexpected error: %s: %s", type(exc).__name__, exc, exc_info=exc)
        message = "internal error"
    details = [_packed(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))]
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
    retry = next((s for c, s in RETRY_AFTER_SECONDS.items() if isinstance(exc, c)), None)
    if retry is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry * 1e9))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return rpc_status.to_status(proto)
