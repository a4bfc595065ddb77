"""The money rules: exact shares, caps, wins and seed resets. Integers only."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal

from jackpot_grpc.domain.errors import InsufficientPool, OverflowTargetCycle, PoolEmpty
from jackpot_grpc.domain.model import GROUPS, ContributionShares, Group, PoolState, WinOutcome

INT64_MAX = 2**63 - 1


def share_of(wager: int, rate: Decimal) -> int:
    """floor(wager × rate), exactly: the rate as a fraction, then integer division.

    100 × 0.57 is 57 here (a float gives 56.99999999999999).
    """
    numerator, denominator = _ratio(rate)
    return wager * numerator // denominator


@functools.lru_cache(maxsize=64)
def _ratio(rate: Decimal) -> tuple[int, int]:
    # Rates change only with config; this runs for every pool of every contribution.
    return rate.as_integer_ratio()


def capped(amount: int, current: int, max_amount: int | None) -> int:
    """What of `amount` fits in a pool holding `current` under its cap."""
    if max_amount is None:
        return amount
    return max(0, min(amount, max_amount - current))


def ceiling(pool: PoolState) -> int:
    """The most a pool may hold: its cap, and never so much that a total overflows int64.

    A pool's amount and its running total of contributions grow by the same amounts, so
    keeping the larger of the two within int64 is a cap on the amount.
    """
    headroom = INT64_MAX - max(0, pool.total_contributions - pool.current_amount)
    return headroom if pool.max_amount is None else min(pool.max_amount, headroom)


def divert_order(pools: Mapping[Group, PoolState]) -> list[Group]:
    """The pools in the order a wager is split: a pool before the pool it diverts its
    overflow to (the targets form no cycle: domain.validation), else in lock order."""

    if all(pools[g].overflow_target is None for g in GROUPS):
        return list(GROUPS)  # no divert: lock order (every batch but a diverting one's)

    def hops(group: Group) -> int:  # how many diverts follow this pool's
        seen: list[Group] = [group]
        target = pools[group].overflow_target
        while target is not None:
            if target in seen:
                raise OverflowTargetCycle(
                    "overflow targets form a cycle: "
                    + " -> ".join(g.value for g in [*seen, target])
                    + "; set them right with UpdateConfig"
                )
            seen.append(target)
            target = pools[target].overflow_target
        return len(seen) - 1

    return sorted(GROUPS, key=lambda g: (-hops(g), g.lock_order))


def effective_rate(pool: PoolState) -> Decimal:
    """The rate a pool takes of a wager: its rate, or 0 while it is suspended (a suspended
    pool takes no share; the ledger row records the 0 it applied)."""
    return _ZERO if pool.suspended else pool.contribution_rate


def effective_reserve_rate(pool: PoolState) -> Decimal:
    """The reserve rate a pool takes of a wager: 0 while it is suspended, like its rate."""
    return _ZERO if pool.suspended else pool.reserve_rate


_ZERO = Decimal("0.0000000000")


def in_play(pools: Mapping[Group, PoolState]) -> Mapping[Group, PoolState]:
    """The pools as a wager is split against them. A suspended pool takes no share: its
    rate and reserve rate are 0 (and recorded so), and it receives no overflow either: a
    pool diverting into it keeps its overflow on its own overflow meter (recorded as its
    own name) until the target is resumed. The same pools when none is suspended."""
    if not any(pools[g].suspended for g in GROUPS):
        return pools
    played: dict[Group, PoolState] = {}
    for g in GROUPS:
        pool = pools[g]
        target = pool.overflow_target
        if pool.suspended:
            pool = replace(pool, contribution_rate=_ZERO, reserve_rate=_ZERO, overflow_target=None)
        elif target is not None and pools[target].suspended:
            pool = replace(pool, overflow_target=None)
        played[g] = pool
    return played


class Splitter:
    """Splits wagers against running pool amounts, with each pool's rates, ceiling and
    overflow target worked out once: a batch splits thousands of wagers against the same
    pools.

    A batch applies its contributions in arrival order, so a cap reached by one
    contribution limits the next. Per pool: the display share is floor(wager × rate) plus
    what other pools diverted into it; what of it fits under the ceiling goes to the
    display, the rest overflows (onto the pool's overflow meter, or into its target, which
    splits it the same way). The reserve share is floor(wager × reserve_rate), on its own:
    each share is floored separately, never capped.
    """

    def __init__(self, pools: Mapping[Group, PoolState]) -> None:
        pools = in_play(pools)
        self._terms = [
            (g, *_ratio(pools[g].contribution_rate), ceiling(pools[g]), pools[g].overflow_target)
            for g in divert_order(pools)
        ]
        self._reserve_terms = (
            [(g, *_ratio(pools[g].reserve_rate)) for g in GROUPS]
            if any(pools[g].reserve_rate for g in GROUPS)
            else None
        )
        # The pools a wager is shared with: in play, with a rate or a reserve rate above 0.
        self._sharing = tuple(
            g for g in GROUPS if pools[g].contribution_rate > 0 or pools[g].reserve_rate > 0
        )

    def split(self, wager: int, current: dict[Group, int]) -> ContributionShares:
        """`wager`'s shares for each pool; advances `current`."""
        amounts: dict[Group, int] = {}
        overflows: dict[Group, int] | None = None
        incoming: dict[Group, int] | None = None
        for group, numerator, denominator, limit, target in self._terms:
            share = wager * numerator // denominator
            if incoming is not None:
                share += incoming.get(group, 0)
            before = current[group]
            # capped(share, before, limit), inline: it runs per wager and pool.
            if before + share <= limit:
                amount = share
            else:
                amount = max(0, limit - before)
                if overflows is None:
                    overflows = dict.fromkeys(GROUPS, 0)
                overflows[group] = share - amount
                if target is not None:
                    incoming = incoming or {}
                    incoming[target] = incoming.get(target, 0) + share - amount
            amounts[group] = amount
            current[group] = before + amount
        reserves = None
        if self._reserve_terms is not None:
            reserves = {g: wager * n // d for g, n, d in self._reserve_terms}
        return ContributionShares(amounts, dict(current), reserves, overflows, self._sharing)


# Six rates (three display, three reserve), each at most 1 (the schema's CHECKs): a wager
# adds at most six times itself to any one meter.
METER_REACH = 6


class MeterRoom:
    """Keeps every meter of every pool within int64 (the ledger's range). While a batch's
    wagers times METER_REACH stay under the room the largest meter leaves, nothing needs
    checking (always, in practice: one multiply-add per wager); past it, `meters_fit`
    checks the meters exactly."""

    def __init__(self, pools: Mapping[Group, PoolState]) -> None:
        largest = 0
        for p in pools.values():
            largest = max(
                largest,
                p.total_contributed,
                p.reserve_amount,
                p.overflow_amount,
                p.total_diverted_in,
                p.total_diverted_out,
            )
        self._room = (INT64_MAX - largest) // METER_REACH
        self._spent = 0

    def surely_fits(self, wager: int) -> bool:
        self._spent += wager
        return self._spent <= self._room


def meters_fit(
    pools: Mapping[Group, PoolState],
    sums: Mapping[Group, int],
    reserves: Mapping[Group, int],
    overflows: Mapping[Group, int],
) -> bool:
    """Whether every meter stays within int64 once a batch's sums are applied."""
    received = dict.fromkeys(GROUPS, 0)
    for g in GROUPS:
        target = pools[g].overflow_target
        if target is not None:
            received[target] += overflows[g]
    for g in GROUPS:
        pool, over = pools[g], overflows[g]
        kept, sent = (0, over) if pool.overflow_target is not None else (over, 0)
        given = sums[g] - received[g] + over + reserves[g]
        meters = (
            pool.total_contributed + given,
            pool.reserve_amount + reserves[g],
            pool.overflow_amount + kept,
            pool.total_diverted_out + sent,
            pool.total_diverted_in + received[g],
        )
        if max(meters) > INT64_MAX:
            return False
    return True


def pay_win(current: int, seed: int, win_amount: int | None, reserve: int = 0) -> WinOutcome:
    """Pay `win_amount` (or the whole pool) and refill the pool to its seed if it fell below:
    from the pool's `reserve` first, the rest by the operator.

    The refill is seed money, recorded in the ledger by source, so the books still balance.
    """
    amount = current if win_amount is None else win_amount
    if amount > current:
        raise InsufficientPool(f"win of {amount} exceeds the pool's {current}")
    if amount <= 0:
        raise PoolEmpty("the pool is empty")
    left = current - amount
    top_up = max(0, seed - left)
    return WinOutcome(
        amount=amount,
        pool_before=current,
        seed_top_up=top_up,
        pool_after=left + top_up,
        reserve_top_up=min(reserve, top_up),
    )
