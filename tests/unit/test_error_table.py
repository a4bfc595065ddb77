"""The one exception -> status table: every domain error has its code, nothing is UNKNOWN."""

from __future__ import annotations

import re

import grpc
import psycopg
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from jackpot_grpc.domain.errors import (
    DomainError,
    FieldViolation,
    IdempotencyKeyReused,
    InsufficientPool,
    InvalidArgument,
    Overloaded,
    PermissionDenied,
    PoolEmpty,
    PoolNotFound,
    ShuttingDown,
    Unauthenticated,
    Unavailable,
    VersionConflict,
)
from jackpot_grpc.entrypoints.status_mapping import (
    ERRORS,
    INTERNAL_REASON,
    status_code_of,
    to_status,
)
from testkit.paths import PROJECT_ROOT


def status_proto(status: grpc.Status) -> status_pb2.Status:
    """The google.rpc.Status that grpcio-status put in the trailing metadata."""
    (blob,) = [v for k, v in status.trailing_metadata if k == "grpc-status-details-bin"]
    return status_pb2.Status.FromString(blob)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidArgument.of("game_id", "must not be empty"), grpc.StatusCode.INVALID_ARGUMENT),
        (InsufficientPool("win of 5 exceeds the pool's 4"), grpc.StatusCode.FAILED_PRECONDITION),
        (PoolNotFound("no such pool"), grpc.StatusCode.NOT_FOUND),
        (VersionConflict("pool is at version 3, not 2"), grpc.StatusCode.ABORTED),
        (Unavailable("database unavailable"), grpc.StatusCode.UNAVAILABLE),
        (Overloaded("queue full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (Unauthenticated("no token"), grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDenied("bad token"), grpc.StatusCode.PERMISSION_DENIED),
    ],
)
def test_each_domain_error_has_its_code(error: DomainError, code: grpc.StatusCode) -> None:
    status = to_status(error)
    assert status.code is code
    assert status.details == error.message
    proto = status_proto(status)
    assert proto.code == code.value[0]
    assert proto.message == error.message


def _all_subclasses(cls: type[DomainError]) -> set[type[DomainError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _all_subclasses(sub)
    return found


def test_the_table_covers_every_domain_error_with_a_reason() -> None:
    """Every domain error class, subclasses included, has its own row: code and reason."""
    assert set(ERRORS) == _all_subclasses(DomainError)
    reasons = [reason for _, reason in ERRORS.values()]
    assert len(set(reasons)) == len(reasons)
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]+", r) for r in reasons)


def test_every_reason_is_documented() -> None:
    text = (PROJECT_ROOT / "docs" / "ERRORS.md").read_text()
    for _code, reason in ERRORS.values():
        assert f"`{reason}`" in text, reason
    assert f"`{INTERNAL_REASON}`" in text


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (InvalidArgument.of("game_id", "x"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST"),
        (
            IdempotencyKeyReused("key k"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "IDEMPOTENCY_KEY_REUSED",
        ),
        (PoolEmpty("empty"), grpc.StatusCode.FAILED_PRECONDITION, "POOL_EMPTY"),
        (ShuttingDown("bye"), grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN"),
        (RuntimeError("boom"), grpc.StatusCode.INTERNAL, "INTERNAL"),
    ],
)
def test_every_status_carries_error_info(
    error: Exception, code: grpc.StatusCode, reason: str
) -> None:
    proto = status_proto(to_status(error))
    assert proto.code == code.value[0]
    info = error_info(proto)
    assert (info.reason, info.domain) == (reason, "jackpot.v1")


def error_info(proto: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    (info,) = [i for d in proto.details if d.Unpack(i := error_details_pb2.ErrorInfo())]
    return info


def others(proto: status_pb2.Status) -> list[any_pb2.Any]:
    """The details besides the ErrorInfo every status carries."""
    return [d for d in proto.details if not d.Unpack(error_details_pb2.ErrorInfo())]


def test_subclass_of_a_domain_error_takes_its_parents_code() -> None:
    class DatabaseGone(Unavailable):
        pass

    assert status_code_of(DatabaseGone("gone")) is grpc.StatusCode.UNAVAILABLE


def test_invalid_argument_carries_bad_request_field_violations() -> None:
    error = InvalidArgument(
        [
            FieldViolation("game_id", "must not be empty"),
            FieldViolation("wager_amount", "must be greater than 0"),
        ]
    )
    proto = status_proto(to_status(error))
    assert proto.code == code_pb2.INVALID_ARGUMENT
    (detail,) = others(proto)
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("game_id", "must not be empty"),
        ("wager_amount", "must be greater than 0"),
    ]


@pytest.mark.parametrize(("error", "seconds"), [(Unavailable("down"), 1), (Overloaded("full"), 0)])
def test_retryable_errors_say_when_to_retry(error: DomainError, seconds: int) -> None:
    (detail,) = others(status_proto(to_status(error)))
    retry = error_details_pb2.RetryInfo()
    assert detail.Unpack(retry)
    assert retry.retry_delay.seconds == seconds
    assert retry.retry_delay.ToNanoseconds() == (10**9 if seconds else 100_000_000)


def test_final_errors_carry_no_retry_info() -> None:
    assert others(status_proto(to_status(InsufficientPool("no")))) == []


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("boom"),
        KeyError("x"),
        ZeroDivisionError(),
        psycopg.errors.NumericValueOutOfRange("bigint out of range"),
        Exception("password=secret"),
    ],
)
def test_unexpected_exception_is_internal_never_unknown(error: Exception) -> None:
    status = to_status(error)
    assert status.code is grpc.StatusCode.INTERNAL
    assert status.code is not grpc.StatusCode.UNKNOWN
    # Nothing of the exception's text reaches the caller.
    assert status.details == "internal error"
    assert status_proto(status).code == code_pb2.INTERNAL
