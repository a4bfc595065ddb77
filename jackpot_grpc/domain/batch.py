"""What a batch of contributions does, decided before anything is written. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from jackpot_grpc.domain import rules
from jackpot_grpc.domain.errors import DomainError, IdempotencyKeyReused, OutOfRange
from jackpot_grpc.domain.model import (
    GROUPS,
    ContributeCommand,
    ContributionShares,
    Group,
    PoolState,
    ScopedKey,
    StoredContribution,
)


@dataclass(frozen=True)
class ContributionPlan:
    """Per position in the batch: fresh (applied now), a replay of an earlier position in
    the batch, a key reused for another request (refused), or (none of these) a replay of
    the ledger row with its key."""

    fresh: list[int] = field(default_factory=list)  # positions applied now, in order
    shares: list[ContributionShares] = field(default_factory=list)  # theirs, same order
    replays: dict[int, int] = field(default_factory=dict)  # position -> first with its key
    # Refused: a key reused for another request, or a wager past the ledger's range.
    conflicts: dict[int, DomainError] = field(default_factory=dict)
    sums: dict[Group, int] = field(default_factory=dict)  # each pool's total move
    counts: dict[Group, int] = field(default_factory=dict)  # contributions moving each pool
    reserves: dict[Group, int] = field(default_factory=dict)  # each reserve's move
    overflows: dict[Group, int] = field(default_factory=dict)  # what overflowed each pool
    diverted_in: dict[Group, int] = field(default_factory=dict)  # overflow others sent here


def key_reused(key: str, what: str) -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        f"idempotency key {key!r} is already bound to a different {what};"
        " resend the same request to replay it, or use a new key"
    )


def plan_contributions(
    commands: Sequence[ContributeCommand],
    known: Mapping[ScopedKey, StoredContribution],
    pools: Mapping[Group, PoolState],
) -> ContributionPlan:
    """Split each fresh command in arrival order against the pools as they stand (a cap
    reached by one limits the next). A key in `known` or earlier in the batch replays when
    the request is the same (same fingerprint), and is refused when it is not. Keys are
    scoped per client: the same key from two clients names two requests. A suspended pool
    takes no share and receives no overflow (rules.in_play)."""
    pools = rules.in_play(pools)
    plan = ContributionPlan(
        sums=dict.fromkeys(GROUPS, 0),
        counts=dict.fromkeys(GROUPS, 0),
        reserves=dict.fromkeys(GROUPS, 0),
        overflows=dict.fromkeys(GROUPS, 0),
        diverted_in=dict.fromkeys(GROUPS, 0),
    )
    current = {g: pools[g].current_amount for g in GROUPS}
    splitter = rules.Splitter(pools)
    room = rules.MeterRoom(pools)
    first_in_batch: dict[ScopedKey, int] = {}
    for position, command in enumerate(commands):
        key = command.idempotency_key
        if key is not None:
            scoped = (command.client, key)
            stored = known.get(scoped)
            if stored is not None:
                if stored.fingerprint != command.fingerprint:
                    plan.conflicts[position] = key_reused(key, "contribution")
                continue
            first = first_in_batch.get(scoped)
            if first is not None:
                if commands[first].fingerprint != command.fingerprint:
                    plan.conflicts[position] = key_reused(key, "contribution in this batch")
                else:
                    plan.replays[position] = first
                continue
            first_in_batch[scoped] = position
        shares = splitter.split(command.wager_amount, current)
        if not room.surely_fits(command.wager_amount) and not _fits(plan, shares, pools):
            for g in GROUPS:  # not applied: the pools stand where they were
                current[g] -= shares.amounts[g]
            plan.conflicts[position] = OutOfRange(
                "this contribution would take a pool's meters past the ledger's int64 range"
            )
            if key is not None:  # nothing written: a repeat of the key is judged afresh
                first_in_batch.pop((command.client, key), None)
            continue
        plan.fresh.append(position)
        plan.shares.append(shares)
        for g in GROUPS:
            if shares.amounts[g]:
                plan.sums[g] += shares.amounts[g]
                plan.counts[g] += 1
        if shares.reserves is not None:
            for g in GROUPS:
                plan.reserves[g] += shares.reserves[g]
        if shares.overflows is not None:
            for g in GROUPS:
                plan.overflows[g] += shares.overflows[g]
    for g in GROUPS:
        target = pools[g].overflow_target
        if target is not None:
            plan.diverted_in[target] += plan.overflows[g]
    return plan


def _fits(
    plan: ContributionPlan, shares: ContributionShares, pools: Mapping[Group, PoolState]
) -> bool:
    """Whether the meters stay within int64 with `shares` added to the plan so far."""
    sums = {g: plan.sums[g] + shares.amounts[g] for g in GROUPS}
    reserves = {g: plan.reserves[g] + (shares.reserves or {}).get(g, 0) for g in GROUPS}
    overflows = {g: plan.overflows[g] + (shares.overflows or {}).get(g, 0) for g in GROUPS}
    return rules.meters_fit(pools, sums, reserves, overflows)
