"""Translation between protobuf messages and domain values. No rules here.

The group enum's mapping lives in jackpot_grpc.contract.groups (the operator's commands use
it too); it is re-exported here for the handlers."""

from __future__ import annotations

import functools
from datetime import datetime

from google.protobuf import timestamp_pb2
from google.type import decimal_pb2
from jackpot.v1 import jackpot_pb2 as pb

from jackpot_grpc.contract.groups import GROUP_TO_PROTO as _TO_PROTO
from jackpot_grpc.contract.groups import group_from_proto as group_from_proto
from jackpot_grpc.contract.groups import group_to_proto as group_to_proto
from jackpot_grpc.domain.model import (
    GROUPS,
    ContributionResult,
    Group,
    OverflowPolicy,
    PendingConfig,
    PoolConfig,
    PoolState,
    Statistics,
    WinRecord,
    WinResult,
)
from jackpot_grpc.domain.rules import INT64_MAX
from jackpot_grpc.domain.validation import rate_text


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def pool(state: PoolState) -> pb.Pool:
    message = pb.Pool(
        group=group_to_proto(state.group),
        current_amount=state.current_amount,
        seed_amount=state.seed_amount,
        contribution_rate=decimal_pb2.Decimal(value=rate_text(state.contribution_rate)),
        total_contributions=state.total_contributions,
        total_wins=state.total_wins,
        last_won_amount=state.last_won_amount or 0,
        last_won_by_user_id=str(state.last_won_by_user_id or ""),
        version=state.version,
        config_version=state.config_version,
        total_seed_funding=state.total_seed_funding,
        last_won_at=timestamp(state.last_won_at),
        updated_at=timestamp(state.updated_at),
        meters=meters(state),
        reserve_rate=decimal_pb2.Decimal(value=rate_text(state.reserve_rate)),
        overflow_policy=_POLICY_TO_PROTO[state.overflow_policy],
        overflow_target=_target(state.overflow_target),
    )
    if state.max_amount is not None:
        message.max_amount = state.max_amount
    if state.suspended:
        message.suspended = True
        message.suspended_reason = state.suspended_reason
    if state.pending is not None:
        message.pending_config.CopyFrom(pending_config(state.pending))
    return message


_POLICY_TO_PROTO: dict[OverflowPolicy, pb.OverflowPolicy.ValueType] = {
    OverflowPolicy.ACCUMULATE: pb.OVERFLOW_POLICY_ACCUMULATE,
    OverflowPolicy.DIVERT: pb.OVERFLOW_POLICY_DIVERT,
}
_POLICY_FROM_PROTO = {v: k for k, v in _POLICY_TO_PROTO.items()}


def policy_from_proto(value: int) -> OverflowPolicy | None:
    """UNSPECIFIED (keep the current policy) and unknown numbers: None."""
    return _POLICY_FROM_PROTO.get(value)  # type: ignore[call-overload, no-any-return]


def _target(group: Group | None) -> pb.JackpotGroup.ValueType:
    return pb.JACKPOT_GROUP_UNSPECIFIED if group is None else _TO_PROTO[group]


def meters(state: PoolState) -> pb.PoolMeters:
    return pb.PoolMeters(
        current_amount=state.current_amount,
        contributed=state.total_contributed,
        reserve_amount=state.reserve_amount,
        overflow_amount=state.overflow_amount,
        hit_count=state.win_count,
        total_paid=state.total_wins,
        seed_funded_by_operator=state.seed_from_operator,
        seed_funded_from_reserve=state.seed_from_reserve,
        diverted_out=state.total_diverted_out,
        diverted_in=state.total_diverted_in,
    )


def pending_config(pending: PendingConfig) -> pb.PendingConfig:
    message = pb.PendingConfig(
        clear_max_amount=pending.clear_max_amount,
        actor=pending.actor,
        reason=pending.reason,
        scheduled_at=timestamp(pending.scheduled_at),
        schedule_id=pending.schedule_id,
    )
    if pending.contribution_rate is not None:
        message.contribution_rate.value = rate_text(pending.contribution_rate)
    if pending.seed_amount is not None:
        message.seed_amount = pending.seed_amount
    if pending.max_amount is not None:
        message.max_amount = pending.max_amount
    if pending.reserve_rate is not None:
        message.reserve_rate.value = rate_text(pending.reserve_rate)
    if pending.overflow_policy is not None:
        message.overflow_policy = _POLICY_TO_PROTO[pending.overflow_policy]
    if pending.overflow_target is not None:
        message.overflow_target = _TO_PROTO[pending.overflow_target]
    return message


def win_record(win: WinRecord) -> pb.WinRecord:
    message = pb.WinRecord(
        win_id=win.win_id,
        group=_TO_PROTO[win.group],
        amount=win.amount,
        game_id=win.game_id,
        user_id=str(win.user_id),
        client=win.client,
        won_at=timestamp(win.created_at),
        pool_before=win.pool_before,
        pool_after=win.pool_after,
        seed_funded_by_operator=win.seed_funded_by_operator,
        seed_funded_from_reserve=win.seed_funded_from_reserve,
        ledger_seq=win.ledger_seq or 0,
    )
    if win.requested_amount is not None:
        message.requested_amount = win.requested_amount
    if win.ledger_index is not None:
        message.ledger_index = win.ledger_index
    return message


def contribute_response(result: ContributionResult) -> pb.ContributeResponse:
    message = pb.ContributeResponse()
    fill_contribute_response(message, result)
    return message


def fill_contribute_response(message: pb.ContributeResponse, result: ContributionResult) -> None:
    """Write `result` into an empty `message` in place (ContributeBatch fills a thousand).

    What many answers share (the shares, their total, the pools shared with, created_at,
    replayed: the same for every equal wager of a batch) is serialised once and merged in
    as bytes; only the pools after, the id and the leaf index are set per answer. Building
    every field per answer cost about 4x as much (BENCHMARKS.md)."""
    shares = result.shares
    message.MergeFromString(
        _shared_part(
            tuple(map(shares.amounts.__getitem__, GROUPS)),
            shares.sharing,
            result.created_at,
            result.replayed,
        )
    )
    add_pool_amount = message.pool_amounts.add
    after = shares.pools_after
    for group in GROUPS:
        add_pool_amount(group=_TO_PROTO[group], amount=after[group])
    message.contribution_id = result.contribution_id
    message.leaf_index = result.leaf_index


@functools.lru_cache(maxsize=1024)
def _shared_part(
    amounts: tuple[int, ...], sharing: tuple[Group, ...], created_at: datetime, replayed: bool
) -> bytes:
    """The serialised fields of a ContributeResponse that equal answers share; `amounts`
    in GROUPS order."""
    message = pb.ContributeResponse()
    for group, amount in zip(GROUPS, amounts, strict=True):
        message.contributions.add(group=_TO_PROTO[group], amount=amount)
    message.total_contribution = sum(amounts)
    message.sharing_groups.extend(_TO_PROTO[g] for g in sharing)
    message.created_at.FromDatetime(created_at)
    message.replayed = replayed
    return message.SerializeToString()


def win_response(result: WinResult) -> pb.WinResponse:
    return pb.WinResponse(
        actual_win_amount=result.outcome.amount,
        remaining_amount=result.outcome.pool_after,
        pool=pool(result.pool),
        seed_top_up=result.outcome.seed_top_up,
        win_id=result.win_id,
        created_at=timestamp(result.created_at),
        replayed=result.replayed,
        leaf_index=result.leaf_index,
    )


def pool_config(config: PoolConfig) -> pb.PoolConfig:
    message = pb.PoolConfig(
        group=group_to_proto(config.group),
        contribution_rate=decimal_pb2.Decimal(value=rate_text(config.contribution_rate)),
        seed_amount=config.seed_amount,
        version=config.version,
        reserve_rate=decimal_pb2.Decimal(value=rate_text(config.reserve_rate)),
        overflow_policy=_POLICY_TO_PROTO[config.overflow_policy],
        overflow_target=_target(config.overflow_target),
    )
    if config.max_amount is not None:
        message.max_amount = config.max_amount
    if config.pending is not None:
        message.pending_config.CopyFrom(pending_config(config.pending))
    return message


def statistics(stats: Statistics) -> pb.GetStatisticsResponse:
    return pb.GetStatisticsResponse(
        pools=[
            pb.PoolStatistics(
                group=group_to_proto(p.group),
                current_amount=p.current_amount,
                total_contributions=p.total_contributions,
                total_wins=p.total_wins,
                total_seed_funding=p.total_seed_funding,
                contribution_count=p.contribution_count,
                win_count=p.win_count,
                last_won_amount=p.last_won_amount or 0,
                last_won_at=timestamp(p.last_won_at),
                meters=meters(p),
            )
            for p in stats.pools
        ],
        total_contribution_count=saturated(stats.contribution_count),
        total_contributed=saturated(stats.total_contributed),
        total_win_count=saturated(stats.total_win_count),
        total_won=saturated(stats.total_won),
        total_pool_amount=saturated(stats.total_pool_amount),
        total_wagered=saturated(stats.total_wagered),
        total_contributed_decimal=exact(stats.total_contributed),
        total_won_decimal=exact(stats.total_won),
        total_pool_amount_decimal=exact(stats.total_pool_amount),
        total_wagered_decimal=exact(stats.total_wagered),
    )


def saturated(value: int) -> int:
    """A lifetime sum in an int64 field: INT64_MAX once it passes (its `*_decimal` twin
    carries the exact value). A read must never fail because a sum grew."""
    return min(value, INT64_MAX)


def exact(value: int) -> decimal_pb2.Decimal:
    return decimal_pb2.Decimal(value=str(value))
