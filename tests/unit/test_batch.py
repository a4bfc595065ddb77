"""Planning a batch of contributions: fresh, replayed from the batch or from the ledger,
or refused because its key is bound to another request."""

from __future__ import annotations

from datetime import UTC, datetime

from jackpot_grpc.domain.batch import plan_contributions
from jackpot_grpc.domain.errors import IdempotencyKeyReused
from jackpot_grpc.domain.model import (
    ContributeCommand,
    ContributionResult,
    ContributionShares,
    Group,
    PoolState,
    ScopedKey,
    StoredContribution,
)
from testkit.pools import pool

MINOR, MAJOR, MEGA = Group.MINOR, Group.MAJOR, Group.MEGA


def pools(mega_max: int | None = None) -> dict[Group, PoolState]:
    return {
        MINOR: pool(MINOR, current=100, rate="0.01"),
        MAJOR: pool(MAJOR, current=100, rate="0.005"),
        MEGA: pool(MEGA, current=100, rate="0.002", max_amount=mega_max),
    }


def command(
    wager: int, key: str | None = None, game: str = "g", client: str = "game-a"
) -> ContributeCommand:
    return ContributeCommand(game_id=game, wager_amount=wager, idempotency_key=key, client=client)


def ledger(*commands: ContributeCommand) -> dict[ScopedKey, StoredContribution]:
    """Keyed commands as if already written."""
    shares = ContributionShares(dict.fromkeys(pools(), 0), dict.fromkeys(pools(), 0))
    result = ContributionResult(1, shares, datetime(2026, 1, 1, tzinfo=UTC), replayed=True)
    return {
        (c.client, c.idempotency_key): StoredContribution(result, c.fingerprint)
        for c in commands
        if c.idempotency_key
    }


def test_every_command_without_a_key_is_fresh_in_order() -> None:
    plan = plan_contributions([command(1000), command(2000)], {}, pools())
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
    known = ledger(command(1000, "old"))
    plan = plan_contributions([command(1000, "old"), command(1000, "new")], known, pools())
    assert plan.fresh == [1]
    assert plan.replays == {}
    assert plan.conflicts == {}
    assert plan.sums == {MINOR: 10, MAJOR: 5, MEGA: 2}


def test_a_key_in_the_ledger_with_another_request_is_refused_and_moves_nothing() -> None:
    known = ledger(command(1000, "old"))
    plan = plan_contributions(
        [command(2000, "old"), command(1000, "old", game="other")], known, pools()
    )
    assert (plan.fresh, plan.replays) == ([], {})
    assert set(plan.conflicts) == {0, 1}
    assert all(isinstance(e, IdempotencyKeyReused) for e in plan.conflicts.values())
    assert plan.sums == {MINOR: 0, MAJOR: 0, MEGA: 0}


def test_a_key_repeated_in_the_batch_replays_its_first_only_for_the_same_request() -> None:
    commands = [command(1000, "k"), command(500), command(9999, "k"), command(1000, "k")]
    plan = plan_contributions(commands, {}, pools())
    assert plan.fresh == [0, 1]
    assert plan.replays == {3: 0}
    assert list(plan.conflicts) == [2]
    assert "'k'" in plan.conflicts[2].message
    assert plan.sums == {MINOR: 15, MAJOR: 7, MEGA: 3}


def test_a_key_in_the_ledger_is_another_clients_request_for_any_other_client() -> None:
    known = ledger(command(1000, "k", client="game-a"))
    plan = plan_contributions(
        [command(2000, "k", client="game-b"), command(2000, "k", client="game-a")],
        known,
        pools(),
    )
    assert plan.fresh == [0]
    assert list(plan.conflicts) == [1]
    assert plan.sums == {MINOR: 20, MAJOR: 10, MEGA: 4}


def test_one_key_from_two_clients_in_a_batch_is_two_requests_each_with_its_own_rules() -> None:
    commands = [
        command(1000, "k", client="game-a"),
        command(3000, "k", client="game-b"),
        command(1000, "k", client="game-a"),  # replays position 0
        command(3000, "k", client="game-b"),  # replays position 1
        command(3000, "k", client="game-a"),  # bound to 1000 for game-a: refused
    ]
    plan = plan_contributions(commands, {}, pools())
    assert plan.fresh == [0, 1]
    assert plan.replays == {2: 0, 3: 1}
    assert list(plan.conflicts) == [4]
    assert plan.sums == {MINOR: 40, MAJOR: 20, MEGA: 8}


def test_a_cap_reached_mid_batch_limits_the_next_and_is_not_counted() -> None:
    plan = plan_contributions([command(1000), command(1000)], {}, pools(mega_max=102))
    assert [s.amounts[MEGA] for s in plan.shares] == [2, 0]
    assert (plan.sums[MEGA], plan.counts[MEGA]) == (2, 1)
    assert plan.counts[MINOR] == 2


def test_only_replays_plan_no_write() -> None:
    known = ledger(command(1000, "a"))
    plan = plan_contributions([command(1000, "a"), command(1000, "a")], known, pools())
    assert (plan.fresh, plan.shares, plan.replays) == ([], [], {})
    assert plan.sums == {MINOR: 0, MAJOR: 0, MEGA: 0}
