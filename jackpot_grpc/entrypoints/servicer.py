"""The gRPC servicer: parse, call the service, translate. Errors leave through one table."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.domain import paging, validation
from jackpot_grpc.domain.errors import (
    DomainError,
    FieldViolation,
    InvalidArgument,
    NoLedgerCheckpoint,
    Overloaded,
)
from jackpot_grpc.domain.model import ContributeCommand, ContributionResult
from jackpot_grpc.entrypoints import convert
from jackpot_grpc.entrypoints.identity import current_client_name
from jackpot_grpc.entrypoints.pools_reply import PoolsReply
from jackpot_grpc.entrypoints.status_mapping import error_kind, to_status
from jackpot_grpc.entrypoints.watch_stream import PoolWatch
from jackpot_grpc.observability.refusals import Refusals
from jackpot_grpc.service.batcher import Contributor
from jackpot_grpc.service.jackpot import JackpotService
from jackpot_grpc.service.ledger_books import LedgerProofs

Request = TypeVar("Request")
Response = TypeVar("Response")
T = TypeVar("T")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]

MAX_BATCH_ITEMS = 5000


def translating_errors(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """Every exception leaves as a status from the error table; none as UNKNOWN."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            if isinstance(exc, Overloaded):
                self.count_refusal(exc)
            await context.abort_with_status(to_status(exc))
            raise  # unreachable: abort_with_status raises

    return wrapper


# Overload found past admission, by the queue that was full: (layer, reason) of
# jackpot_refusals_total, like admission's own refusals.
OVERLOAD_REFUSALS: dict[str, tuple[str, str]] = {
    Overloaded.DATABASE_POOL: ("database_pool", "waiting_limit"),  # DB_POOL_MAX_WAITING
    Overloaded.CONTRIBUTIONS: ("contributions", "queue_full"),  # the contribution queue
}


class JackpotServicer(jackpot_pb2_grpc.JackpotServiceServicer):
    def __init__(
        self,
        service: JackpotService,
        contributor: Contributor,
        *,
        max_wager: int = validation.MAX_WAGER_AMOUNT,
        refusals: Refusals | None = None,
        watch: PoolWatch | None = None,
        ledger_proofs: LedgerProofs | None = None,
    ) -> None:
        self._watch = watch
        self._service = service
        self._ledger_proofs = ledger_proofs  # None: this server signs no checkpoints
        self._contributor = contributor
        self._max_wager = max_wager
        self._refusals = Refusals() if refusals is None else refusals
        for layer, reason in OVERLOAD_REFUSALS.values():
            self._refusals.declare(layer, (reason,))
        self._pools_reply = PoolsReply()

    def count_refusal(self, exc: Overloaded) -> None:
        layer, reason = OVERLOAD_REFUSALS.get(exc.queue, (exc.queue, "full"))
        self._refusals.count(layer, reason)

    @translating_errors
    async def Contribute(
        self, request: pb.ContributeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ContributeResponse:
        command = validation.contribute_command(
            request.game_id,
            request.wager_amount,
            request.idempotency_key,
            current_client_name(),
            self._max_wager,
        )
        if request.validate_only:
            # Never through the group-commit batch: a dry run's transaction is its own.
            return convert.contribute_response(await self._dry_run_contribution(command))
        return convert.contribute_response(await self._contributor.contribute(command))

    async def _dry_run_contribution(self, command: ContributeCommand) -> ContributionResult:
        (result,) = await self._service.contribute_many([command], validate_only=True)
        if isinstance(result, DomainError):
            raise result
        return result

    @translating_errors
    async def ContributeBatch(
        self, request: pb.ContributeBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ContributeBatchResponse:
        if len(request.contributions) > MAX_BATCH_ITEMS:
            raise InvalidArgument.of("contributions", f"must hold at most {MAX_BATCH_ITEMS} items")
        if not request.validate_only:
            _refuse_half_dry_run(request)
        checked: list[ContributeCommand | InvalidArgument] = []
        client = current_client_name()
        for item in request.contributions:
            try:
                checked.append(
                    validation.contribute_command(
                        item.game_id,
                        item.wager_amount,
                        item.idempotency_key,
                        client,
                        self._max_wager,
                    )
                )
            except InvalidArgument as exc:
                checked.append(exc)
        valid = [c for c in checked if isinstance(c, ContributeCommand)]
        applied = iter(
            await self._service.contribute_many(valid, validate_only=request.validate_only)
            if valid
            else []
        )
        response = pb.ContributeBatchResponse()
        for outcome in checked:
            slot = response.results.add()
            result = outcome if isinstance(outcome, InvalidArgument) else next(applied)
            if isinstance(result, DomainError):
                slot.error.CopyFrom(_item_error(result))
                response.rejected_count += 1
                continue
            if result.replayed:
                response.replayed_count += 1
            else:
                response.applied_count += 1
            convert.fill_contribute_response(slot.result, result)
        return response

    @translating_errors
    async def Win(
        self, request: pb.WinRequest, context: grpc.aio.ServicerContext
    ) -> pb.WinResponse:
        command = validation.win_command(
            convert.group_from_proto(request.group),
            request.game_id,
            request.user_id,
            request.win_amount if request.HasField("win_amount") else None,
            request.idempotency_key,
            current_client_name(),
        )
        return convert.win_response(
            await self._service.win(command, validate_only=request.validate_only)
        )

    # Answered in bytes: the handler registered for GetPools sends them as they are
    # (entrypoints/registration.py), so the override's return type differs from the stub's.
    @translating_errors
    async def GetPools(  # type: ignore[override]
        self, request: pb.GetPoolsRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        return self._pools_reply.serialised(await self._service.pools())

    @translating_errors
    async def GetStatistics(
        self, request: pb.GetStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatisticsResponse:
        return convert.statistics(await self._service.statistics())

    @translating_errors
    async def GetConfig(
        self, request: pb.GetConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConfigResponse:
        configs = await self._service.config()
        return pb.GetConfigResponse(pools=[convert.pool_config(c) for c in configs])

    @translating_errors
    async def GetLedgerProof(
        self, request: pb.GetLedgerProofRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetLedgerProofResponse:
        row = _proof_row(request)
        if self._ledger_proofs is None:
            raise NoLedgerCheckpoint("this server signs no ledger checkpoints")
        proof = await self._ledger_proofs.prove(leaf_index=request.leaf_index, row=row)
        return pb.GetLedgerProofResponse(
            leaf_index=proof.leaf.index,
            table=proof.leaf.table,
            row_id=proof.leaf.row_id,
            leaf=proof.leaf.leaf,
            tree_size=proof.tree_size,
            inclusion_proof=proof.proof,
            checkpoint=proof.checkpoint,
        )

    @translating_errors
    async def UpdateConfig(
        self, request: pb.UpdateConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateConfigResponse:
        change = validation.config_change(
            convert.group_from_proto(request.group),
            validation.parse_rate("contribution_rate", request.contribution_rate.value)
            if request.HasField("contribution_rate")
            else None,
            request.seed_amount if request.HasField("seed_amount") else None,
            request.max_amount if request.HasField("max_amount") else None,
            request.clear_max_amount,
            request.expected_version if request.HasField("expected_version") else None,
            request.actor,
            request.reason,
            request.apply_at_next_win,
            reserve_rate=validation.parse_rate("reserve_rate", request.reserve_rate.value)
            if request.HasField("reserve_rate")
            else None,
            overflow_policy=_known(
                "overflow_policy", request.overflow_policy, convert.policy_from_proto
            ),
            overflow_target=_known(
                "overflow_target", request.overflow_target, convert.group_from_proto
            ),
        )
        # Who is allowed is settled before the handler (entrypoints/auth.py); the audit
        # row records that client beside the request's free-text actor.
        config, audit_id = await self._service.update_config(
            change, current_client_name(), validate_only=request.validate_only
        )
        return pb.UpdateConfigResponse(config=convert.pool_config(config), audit_id=audit_id)

    @translating_errors
    async def ListWins(
        self, request: pb.ListWinsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWinsResponse:
        query = paging.wins_query(
            convert.group_from_proto(request.group),
            request.group != pb.JACKPOT_GROUP_UNSPECIFIED,
            _instant(request, "start_time"),
            _instant(request, "end_time"),
            request.page_size,
            request.page_token,
        )
        # One more than the page: whether there is a next one, without a count.
        found = await self._service.wins(
            group=query.group,
            start=query.start,
            end=query.end,
            after=query.after,
            limit=query.page_size + 1,
        )
        page = found[: query.page_size]
        response = pb.ListWinsResponse(wins=[convert.win_record(w) for w in page])
        if len(found) > query.page_size:
            last = page[-1]
            response.next_page_token = paging.next_token(query, (last.created_at, last.win_id))
        return response

    @translating_errors
    async def SuspendPool(
        self, request: pb.SuspendPoolRequest, context: grpc.aio.ServicerContext
    ) -> pb.PoolLifecycleResponse:
        return await self._lifecycle(request, suspended=True)

    @translating_errors
    async def ResumePool(
        self, request: pb.ResumePoolRequest, context: grpc.aio.ServicerContext
    ) -> pb.PoolLifecycleResponse:
        return await self._lifecycle(request, suspended=False)

    async def _lifecycle(
        self, request: pb.SuspendPoolRequest | pb.ResumePoolRequest, *, suspended: bool
    ) -> pb.PoolLifecycleResponse:
        group, actor, reason = validation.lifecycle_change(
            convert.group_from_proto(request.group),
            request.actor,
            request.reason,
            reason_required=suspended,
        )
        pool, event_id = await self._service.set_suspended(
            group, suspended, actor, reason, current_client_name()
        )
        return pb.PoolLifecycleResponse(pool=convert.pool(pool), event_id=event_id)

    # Written with context.write, not as a generator: each write is awaited with a bound,
    # so a reader that stops reading is cut off (entrypoints/watch_stream.py).
    @translating_errors
    async def WatchPools(  # type: ignore[override]
        self, request: pb.WatchPoolsRequest, context: grpc.aio.ServicerContext
    ) -> None:
        if self._watch is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "WatchPools is not served here")
        else:
            await self._watch.serve(request, context)


def _known(field: str, number: int, parse: Callable[[int], T | None]) -> T | None:
    """An optional enum: 0 (UNSPECIFIED) is unset; a number the enum lacks is refused."""
    value = parse(number)
    if number and value is None:
        raise InvalidArgument.of(field, f"{number} is not a value of the enum")
    return value


def _refuse_half_dry_run(request: pb.ContributeBatchRequest) -> None:
    """An item asking for a dry run inside a real batch: the whole batch is refused rather
    than writing what one item asked only to validate."""
    for position, item in enumerate(request.contributions):
        if item.validate_only:
            raise InvalidArgument.of(
                f"contributions[{position}].validate_only",
                "set validate_only on the batch request (a batch is validated whole)",
            )


def _item_error(exc: DomainError) -> pb.ItemError:
    violation: FieldViolation | None = (
        exc.violations[0] if isinstance(exc, InvalidArgument) and exc.violations else None
    )
    code, reason = error_kind(exc)
    return pb.ItemError(
        code=code.value[0],
        message=exc.message,
        field=violation.field if violation else "",
        reason=reason,
    )


def _proof_row(request: pb.GetLedgerProofRequest) -> tuple[str, int] | None:
    """The row GetLedgerProof names by id, if any; refuses what names nothing sensible."""
    for name in ("leaf_index", "contribution_id", "win_id"):
        if getattr(request, name) < 0:
            raise InvalidArgument.of(name, "must not be negative")
    if request.contribution_id and request.win_id:
        raise InvalidArgument.of("win_id", "give contribution_id or win_id, not both")
    if request.contribution_id:
        return ("contributions", request.contribution_id)
    if request.win_id:
        return ("wins", request.win_id)
    return None


def _instant(
    request: pb.ListWinsRequest, field: Literal["start_time", "end_time"]
) -> datetime | None:
    """A Timestamp field as a datetime (None: not given); one outside Timestamp's range
    (0001-01-01 to 9999-12-31, nanos below a second) is INVALID_ARGUMENT naming it."""
    if not request.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(request, field)
    try:
        return stamp.ToDatetime(UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument.of(
            field, "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"
        ) from None
