"""The servicer only parses, calls and translates: checked without a network or a database.

Why not grpcio-testing: `grpc_testing.server_from_dictionary(..., strict_real_time())`
drives servicer methods synchronously on its own thread. Our servicer's methods are
coroutines (grpc.aio), so grpc_testing returns the un-awaited coroutine object as the
"response" with status OK and never runs the handler (pinned below by
`test_grpc_testing_cannot_drive_async_servicers`). Instead, these tests await the servicer's
methods directly with a minimal fake `ServicerContext` that records `abort_with_status` and
raises `grpc.aio.AbortError`, as the real one does. The full path over a real channel is
covered by tests/e2e/test_grpc_api.py.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc_testing
import pytest
from google.rpc import error_details_pb2, status_pb2
from google.type import decimal_pb2
from jackpot.v1 import jackpot_pb2 as pb

from jackpot_grpc.domain.errors import InsufficientPool, Unavailable, VersionConflict
from jackpot_grpc.domain.model import (
    GROUPS,
    ContributeCommand,
    ContributionResult,
    ContributionShares,
)
from jackpot_grpc.entrypoints.servicer import JackpotServicer
from testkit.random_refs import random_user

SERVICE = pb.DESCRIPTOR.services_by_name["JackpotService"]


class FakeContext:
    """Just enough of grpc.aio.ServicerContext for the servicer."""

    def __init__(self, metadata: Sequence[tuple[str, str]] = ()) -> None:
        self._metadata = tuple(metadata)
        self.status: grpc.Status | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def abort_with_status(self, status: grpc.Status) -> None:
        self.status = status
        raise grpc.aio.AbortError()

    def rpc_status(self) -> status_pb2.Status:
        assert self.status is not None
        (blob,) = [v for k, v in self.status.trailing_metadata if k == "grpc-status-details-bin"]
        return status_pb2.Status.FromString(blob)

    def violations(self) -> list[tuple[str, str]]:
        bad = error_details_pb2.BadRequest()
        (_,) = [d for d in self.rpc_status().details if d.Unpack(bad)]
        return [(v.field, v.description) for v in bad.field_violations]


class Unused:
    """A service/contributor that fails the test if the servicer reaches it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the servicer called {name} for a request it should reject")


class FakeService:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.batches: list[list[ContributeCommand]] = []
        self.changes: list[Any] = []
        self.clients: list[str] = []

    async def contribute_many(
        self, commands: list[ContributeCommand], validate_only: bool = False
    ) -> list[ContributionResult]:
        if self.error:
            raise self.error
        self.batches.append(list(commands))
        return [
            ContributionResult(
                contribution_id=100 + i,
                shares=ContributionShares(
                    amounts=dict.fromkeys(GROUPS, c.wager_amount // 100),
                    pools_after=dict.fromkeys(GROUPS, 1000),
                ),
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
                replayed=False,
            )
            for i, c in enumerate(commands)
        ]

    async def contribute(self, command: ContributeCommand) -> ContributionResult:
        (result,) = await self.contribute_many([command])
        return result

    async def win(self, command: Any, validate_only: bool = False) -> Any:
        assert self.error is not None
        raise self.error

    async def update_config(self, change: Any, client: str, validate_only: bool = False) -> Any:
        self.changes.append(change)
        self.clients.append(client)
        assert self.error is not None
        raise self.error


def servicer(service: Any = None) -> JackpotServicer:
    backend: Any = Unused() if service is None else service
    return JackpotServicer(backend, backend)


async def aborted(call: Any, context: FakeContext) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AbortError):
        await call
    assert context.status is not None
    code: grpc.StatusCode = context.status.code
    return code


def test_grpc_testing_cannot_drive_async_servicers() -> None:
    test_server = grpc_testing.server_from_dictionary(
        {SERVICE: servicer()}, grpc_testing.strict_real_time()
    )
    rpc = test_server.invoke_unary_unary(
        SERVICE.methods_by_name["Contribute"], (), pb.ContributeRequest(), None
    )
    response, _, code, _ = rpc.termination()
    # The handler never ran: its coroutine came back as the response, with OK.
    assert code is grpc.StatusCode.OK
    assert not isinstance(response, pb.ContributeResponse)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        response.close()


async def test_bad_contribute_is_invalid_argument_with_field_violations() -> None:
    context = FakeContext()
    call = servicer().Contribute(pb.ContributeRequest(game_id="", wager_amount=-5), context)
    assert await aborted(call, context) is grpc.StatusCode.INVALID_ARGUMENT
    assert context.violations() == [
        ("game_id", "must not be empty"),
        ("wager_amount", "must be greater than 0"),
    ]


async def test_bad_win_is_invalid_argument_naming_each_field() -> None:
    context = FakeContext()
    request = pb.WinRequest(game_id="slots", user_id="nope", win_amount=0)
    assert await aborted(servicer().Win(request, context), context) is (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert [field for field, _ in context.violations()] == ["group", "user_id", "win_amount"]


async def test_update_config_with_bad_rate_names_the_field() -> None:
    context = FakeContext()
    request = pb.UpdateConfigRequest(
        group=pb.JACKPOT_GROUP_MINOR, contribution_rate=decimal_pb2.Decimal(value="NaN")
    )
    assert await aborted(servicer().UpdateConfig(request, context), context) is (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    [(field, description)] = context.violations()
    assert field == "contribution_rate" and description.startswith("'NaN' is not a decimal")


async def test_update_config_passes_only_the_fields_that_are_set() -> None:
    service = FakeService(VersionConflict("minor pool is at version 4, not 3"))
    context = FakeContext()
    request = pb.UpdateConfigRequest(
        group=pb.JACKPOT_GROUP_MAJOR,
        contribution_rate=decimal_pb2.Decimal(value="0.25"),
        expected_version=3,
        actor="alice",
    )
    assert await aborted(servicer(service).UpdateConfig(request, context), context) is (
        grpc.StatusCode.ABORTED
    )
    (change,) = service.changes
    assert (change.seed_amount, change.max_amount, change.expected_version) == (None, None, 3)
    assert str(change.contribution_rate) == "0.2500000000"  # canonical, the database's scale
    assert change.actor == "alice"
    assert service.clients == ["anonymous"]  # no client bound: what open mode records


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InsufficientPool("win of 9 exceeds the pool's 8"), grpc.StatusCode.FAILED_PRECONDITION),
        (Unavailable("database unavailable"), grpc.StatusCode.UNAVAILABLE),
        (RuntimeError("unexpected"), grpc.StatusCode.INTERNAL),
    ],
)
async def test_service_errors_leave_through_the_table(
    error: Exception, code: grpc.StatusCode
) -> None:
    context = FakeContext()
    request = pb.WinRequest(group=pb.JACKPOT_GROUP_MINOR, game_id="slots", user_id=random_user())
    assert await aborted(servicer(FakeService(error)).Win(request, context), context) is code


async def test_contribute_batch_answers_each_item() -> None:
    service = FakeService()
    request = pb.ContributeBatchRequest(
        contributions=[
            pb.ContributeRequest(game_id="slots", wager_amount=1000),
            pb.ContributeRequest(game_id="", wager_amount=1000),
            pb.ContributeRequest(game_id="slots", wager_amount=500),
            pb.ContributeRequest(game_id="slots", wager_amount=0),
        ]
    )
    reply = await servicer(service).ContributeBatch(request, FakeContext())
    assert (reply.applied_count, reply.rejected_count) == (2, 2)
    kinds = [r.WhichOneof("outcome") for r in reply.results]
    assert kinds == ["result", "error", "result", "error"]
    assert [r.result.contribution_id for r in reply.results if r.HasField("result")] == [100, 101]
    assert [r.result.total_contribution for r in reply.results if r.HasField("result")] == [30, 15]
    errors = [r.error for r in reply.results if r.HasField("error")]
    assert [(e.code, e.field, e.reason) for e in errors] == [
        (grpc.StatusCode.INVALID_ARGUMENT.value[0], "game_id", "INVALID_REQUEST"),
        (grpc.StatusCode.INVALID_ARGUMENT.value[0], "wager_amount", "INVALID_REQUEST"),
    ]
    assert reply.replayed_count == 0
    # Only the valid items reached the service, in one call.
    assert [[c.wager_amount for c in batch] for batch in service.batches] == [[1000, 500]]


async def test_oversized_contribute_batch_is_rejected_whole() -> None:
    context = FakeContext()
    request = pb.ContributeBatchRequest(
        contributions=[pb.ContributeRequest(game_id="g", wager_amount=1)] * 5001
    )
    assert await aborted(servicer().ContributeBatch(request, context), context) is (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert [field for field, _ in context.violations()] == ["contributions"]
