"""A pool's state as the domain rules see it, built with only the fields a test cares about."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from jackpot_grpc.domain.model import Group, OverflowPolicy, PoolState


def pool(
    group: Group,
    *,
    current: int,
    rate: str,
    seed: int = 100,
    max_amount: int | None = None,
    reserve_rate: str = "0",
    target: Group | None = None,
) -> PoolState:
    return PoolState(
        group=group,
        current_amount=current,
        seed_amount=seed,
        max_amount=max_amount,
        contribution_rate=Decimal(rate),
        total_contributions=0,
        total_wins=0,
        total_seed_funding=seed,
        contribution_count=0,
        win_count=0,
        last_won_amount=None,
        last_won_at=None,
        last_won_by_user_id=None,
        version=1,
        config_version=1,
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
        reserve_rate=Decimal(reserve_rate),
        overflow_policy=OverflowPolicy.DIVERT if target else OverflowPolicy.ACCUMULATE,
        overflow_target=target,
    )
