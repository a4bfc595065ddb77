"""Planning a batch of contributions: fresh, replayed from the batch or from the ledger."""

from __future__ import annotations

from jackpot_grpc.domain.batch import plan_contributions
from jackpot_grpc.domain.model import ContributeCommand, Group, PoolState
from testkit.pools import pool

MINOR, MAJOR, MEGA = Group.MINOR, Group.MAJOR, Group.MEGA


def pools(mega_max: int | None = None) -> dict[Group, PoolState]:
    return {
        MINOR: pool(MINOR, current=100, rate="0.01"),
        MAJOR: pool(MAJOR, current=100, rate="0.005"),
        MEGA: pool(MEGA, current=100, rate="0.002", max_amount=mega_max),
    }


def command(wager: int, key: str | None = None) -> ContributeCommand:
    return ContributeCommand(game_id="g", wager_amount=wager, idempotency_key=key)


def test_every_command_without_a_key_is_fresh_in_order() -> None:
    plan = plan_contributions([command(1000), command(2000)], set(), pools())
    assert plan.fresh == [0, 1]
    assert [s.amounts for s in plan.shares] == [
        {MINOR: 10, MAJOR: 5, MEGA: 2},
        {MINOR: 20, MAJOR: 10, MEGA: 4},
    ]
    assert plan.shares[1].pools_after == {MINOR: 130, MAJOR: 115, MEGA: 106}
    assert plan.sums == {MINOR: 30, MAJOR: 15, MEGA: 6}
    assert plan.counts == {MINOR: 2, MAJOR: 2, MEGA: 2}
    assert plan.replays == {}


def test_a_key_in_the_ledger_replays_and_moves_nothing() -> None:
    plan = plan_contributions([command(1000, "old"), command(1000, "new")], {"old"}, pools())
    assert plan.fresh == [1]
    assert plan.replays == {}
    assert plan.sums == {MINOR: 10, MAJOR: 5, MEGA: 2}


def test_a_key_repeated_in_the_batch_replays_its_first() -> None:
    commands = [command(1000, "k"), command(500), command(9999, "k"), command(1000, "k")]
    plan = plan_contributions(commands, set(), pools())
    assert plan.fresh == [0, 1]
    assert plan.replays == {2: 0, 3: 0}
    assert plan.sums == {MINOR: 15, MAJOR: 7, MEGA: 3}


def test_a_cap_reached_mid_batch_limits_the_next_and_is_not_counted() -> None:
    plan = plan_contributions([command(1000), command(1000)], set(), pools(mega_max=102))
    assert [s.amounts[MEGA] for s in plan.shares] == [2, 0]
    assert (plan.sums[MEGA], plan.counts[MEGA]) == (2, 1)
    assert plan.counts[MINOR] == 2


def test_only_replays_plan_no_write() -> None:
    plan = plan_contributions([command(1000, "a"), command(1000, "a")], {"a"}, pools())
    assert (plan.fresh, plan.shares, plan.replays) == ([], [], {})
    assert plan.sums == {MINOR: 0, MAJOR: 0, MEGA: 0}
