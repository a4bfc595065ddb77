"""What a batch of contributions does, decided before anything is written. Pure."""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field

from jackpot_grpc.domain import rules
from jackpot_grpc.domain.model import (
    GROUPS,
    ContributeCommand,
    ContributionShares,
    Group,
    PoolState,
)


@dataclass(frozen=True)
class ContributionPlan:
    """Per position in the batch: fresh (applied now), a replay of an earlier position in
    the batch, or (neither) a replay of the ledger row with its key."""

    fresh: list[int] = field(default_factory=list)  # positions applied now, in order
    shares: list[ContributionShares] = field(default_factory=list)  # theirs, same order
    replays: dict[int, int] = field(default_factory=dict)  # position -> first with its key
    sums: dict[Group, int] = field(default_factory=dict)  # each pool's total move
    counts: dict[Group, int] = field(default_factory=dict)  # contributions moving each pool


def plan_contributions(
    commands: Sequence[ContributeCommand],
    known_keys: Container[str],
    pools: Mapping[Group, PoolState],
) -> ContributionPlan:
    """Split each fresh command in arrival order against the pools as they stand (a cap
    reached by one limits the next); a key in `known_keys` or earlier in the batch replays."""
    plan = ContributionPlan(sums=dict.fromkeys(GROUPS, 0), counts=dict.fromkeys(GROUPS, 0))
    current = {g: pools[g].current_amount for g in GROUPS}
    splitter = rules.Splitter(pools)
    first_in_batch: dict[str, int] = {}
    for position, command in enumerate(commands):
        key = command.idempotency_key
        if key is not None:
            if key in known_keys:
                continue
            if key in first_in_batch:
                plan.replays[position] = first_in_batch[key]
                continue
            first_in_batch[key] = position
        shares = splitter.split(command.wager_amount, current)
        plan.fresh.append(position)
        plan.shares.append(shares)
        for g in GROUPS:
            if shares.amounts[g]:
                plan.sums[g] += shares.amounts[g]
                plan.counts[g] += 1
    return plan
