"""The money rules: exact shares, caps, wins and seed resets. Integers only."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from decimal import Decimal

from jackpot_grpc.domain.errors import InsufficientPool, PoolEmpty
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


def effective_rate(pool: PoolState) -> Decimal:
    """The rate a pool takes of a wager: its rate, or 0 while it is suspended (a suspended
    pool takes no share; the ledger row records the 0 it applied)."""
    return _ZERO if pool.suspended else pool.contribution_rate


_ZERO = Decimal("0.0000000000")


class Splitter:
    """Splits wagers against running pool amounts, with each pool's rate and ceiling
    worked out once: a batch splits thousands of wagers against the same pools.

    A batch applies its contributions in arrival order, so a cap reached by one
    contribution limits the next.
    """

    def __init__(self, pools: Mapping[Group, PoolState]) -> None:
        rates = {g: effective_rate(pools[g]) for g in GROUPS}
        self._terms = [(g, *_ratio(rates[g]), ceiling(pools[g])) for g in GROUPS]
        self._sharing = tuple(g for g in GROUPS if rates[g] > 0)

    def split(self, wager: int, current: dict[Group, int]) -> ContributionShares:
        """`wager`'s share for each pool (share_of, then capped); advances `current`."""
        amounts: dict[Group, int] = {}
        for group, numerator, denominator, limit in self._terms:
            share = wager * numerator // denominator
            before = current[group]
            # capped(share, before, limit), inline: it runs per wager and pool.
            amount = share if before + share <= limit else max(0, limit - before)
            amounts[group] = amount
            current[group] = before + amount
        return ContributionShares(amounts=amounts, pools_after=dict(current), sharing=self._sharing)


def pay_win(current: int, seed: int, win_amount: int | None) -> WinOutcome:
    """Pay `win_amount` (or the whole pool) and refill the pool to its seed if it fell below.

    The refill is new seed money, recorded in the ledger, so the books still balance.
    """
    amount = current if win_amount is None else win_amount
    if amount > current:
        raise InsufficientPool(f"win of {amount} exceeds the pool's {current}")
    if amount <= 0:
        raise PoolEmpty("the pool is empty")
    left = current - amount
    top_up = max(0, seed - left)
    return WinOutcome(
        amount=amount, pool_before=current, seed_top_up=top_up, pool_after=left + top_up
    )
