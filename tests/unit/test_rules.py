"""The money rules: exact shares, caps in arrival order, wins and seed resets."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jackpot_grpc.domain import rules
from jackpot_grpc.domain.errors import InsufficientPool, OverflowTargetCycle
from jackpot_grpc.domain.model import GROUPS, Group, PoolState
from jackpot_grpc.domain.validation import MAX_WAGER_AMOUNT, RATE_DECIMAL_PLACES
from testkit.pools import pool

INT64_MAX = 2**63 - 1


def pools(**kwargs: PoolState) -> dict[Group, PoolState]:
    return {Group(name): state for name, state in kwargs.items()}


# --- share_of ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wager", "rate", "expected"),
    [
        (100, "0.57", 57),  # a float gives 56.99999999999999 -> 56
        (100, "1.15", 115),  # float: 114.99999999999999
        (100, "0.29", 29),  # float: 28.999999999999996
        (10, "0.3", 3),  # 0.1 + 0.2 != 0.3 in floats
        (1000, "0.005", 5),
        (199, "0.005", 0),  # floor, not round
        (201, "0.005", 1),
        (1, "0.9999999999", 0),
        (10**10, "0.0000000001", 1),
        (7, "0", 0),
        (7, "1", 7),
        (7, "1.0000000000", 7),
    ],
)
def test_share_of_is_exact_floor(wager: int, rate: str, expected: int) -> None:
    assert rules.share_of(wager, Decimal(rate)) == expected


def test_share_of_float_trap_sum() -> None:
    rate = Decimal("0.1") + Decimal("0.2")
    assert rate == Decimal("0.3")
    assert rules.share_of(10**17, rate) == 3 * 10**16
    # The trap the exact path avoids: a rate that went through a float is not 0.3.
    assert rules.share_of(10**17, Decimal(0.1 + 0.2)) == 3 * 10**16 + 4


def test_share_of_huge_int64_wagers_loses_no_digit() -> None:
    assert rules.share_of(INT64_MAX, Decimal("1")) == INT64_MAX
    assert rules.share_of(INT64_MAX, Decimal("0.57")) == INT64_MAX * 57 // 100
    assert rules.share_of(INT64_MAX, Decimal("0")) == 0
    assert rules.share_of(MAX_WAGER_AMOUNT, Decimal("0.0000000003")) == 300_000


# --- caps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "current", "max_amount", "expected"),
    [
        (50, 100, None, 50),  # no cap
        (50, 1000, 1000, 0),  # at its max: takes nothing
        (50, 990, 1000, 10),  # only what fits
        (50, 950, 1000, 50),  # exactly fits
        (50, 1200, 1000, 0),  # above its max (cap lowered later): never negative
        (0, 10, 1000, 0),
    ],
)
def test_capped(amount: int, current: int, max_amount: int | None, expected: int) -> None:
    assert rules.capped(amount, current, max_amount) == expected


def test_split_contribution_caps_each_pool_independently() -> None:
    state = pools(
        minor=pool(Group.MINOR, current=995, rate="0.5", max_amount=1000),
        major=pool(Group.MAJOR, current=5000, rate="0.25", max_amount=5000),
        mega=pool(Group.MEGA, current=7, rate="0.1"),
    )
    shares = rules.Splitter(state).split(100, {g: state[g].current_amount for g in GROUPS})
    assert shares.amounts == {Group.MINOR: 5, Group.MAJOR: 0, Group.MEGA: 10}
    assert shares.pools_after == {Group.MINOR: 1000, Group.MAJOR: 5000, Group.MEGA: 17}
    assert shares.total == 15


def test_split_in_order_reaches_the_cap_mid_batch() -> None:
    state = pools(
        minor=pool(Group.MINOR, current=80, rate="0.1", max_amount=100),
        major=pool(Group.MAJOR, current=0, rate="0.01"),
        mega=pool(Group.MEGA, current=0, rate="0"),
    )
    running = {g: state[g].current_amount for g in GROUPS}
    minors = [rules.Splitter(state).split(80, running).amounts[Group.MINOR] for _ in range(4)]
    assert minors == [8, 8, 4, 0]  # the third contribution fills the pool, the fourth finds it full
    assert running == {Group.MINOR: 100, Group.MAJOR: 0, Group.MEGA: 0}


def test_split_in_order_advances_running_amounts() -> None:
    state = pools(
        minor=pool(Group.MINOR, current=10, rate="0.5"),
        major=pool(Group.MAJOR, current=20, rate="0.25"),
        mega=pool(Group.MEGA, current=30, rate="0.125"),
    )
    running = {g: state[g].current_amount for g in GROUPS}
    first = rules.Splitter(state).split(8, running)
    second = rules.Splitter(state).split(16, running)
    assert first.pools_after == {Group.MINOR: 14, Group.MAJOR: 22, Group.MEGA: 31}
    assert second.pools_after == {Group.MINOR: 22, Group.MAJOR: 26, Group.MEGA: 33}
    assert running == second.pools_after
    # The result owns its own copy: advancing the running amounts later changes nothing.
    rules.Splitter(state).split(8, running)
    assert second.pools_after[Group.MINOR] == 22


# --- wins --------------------------------------------------------------------------------


def test_pay_win_given_amount_above_seed_needs_no_top_up() -> None:
    outcome = rules.pay_win(current=5000, seed=1000, win_amount=3000)
    assert (outcome.amount, outcome.pool_before, outcome.seed_top_up, outcome.pool_after) == (
        3000,
        5000,
        0,
        2000,
    )


def test_pay_win_remaining_exactly_seed_needs_no_top_up() -> None:
    outcome = rules.pay_win(current=5000, seed=1000, win_amount=4000)
    assert (outcome.seed_top_up, outcome.pool_after) == (0, 1000)


def test_pay_win_below_seed_is_topped_up_to_seed() -> None:
    outcome = rules.pay_win(current=5000, seed=1000, win_amount=4500)
    assert (outcome.amount, outcome.seed_top_up, outcome.pool_after) == (4500, 500, 1000)


def test_pay_win_whole_pool_resets_to_seed() -> None:
    outcome = rules.pay_win(current=5000, seed=1000, win_amount=None)
    assert (outcome.amount, outcome.seed_top_up, outcome.pool_after) == (5000, 1000, 1000)


def test_pay_win_of_the_whole_pool_by_amount_equals_whole_pool() -> None:
    assert rules.pay_win(5000, 1000, 5000) == rules.pay_win(5000, 1000, None)


def test_pay_win_more_than_the_pool_is_refused() -> None:
    with pytest.raises(InsufficientPool, match="5001 exceeds the pool's 5000"):
        rules.pay_win(current=5000, seed=1000, win_amount=5001)


def test_pay_win_from_an_empty_pool_is_refused() -> None:
    with pytest.raises(InsufficientPool):
        rules.pay_win(current=0, seed=1000, win_amount=None)


# --- properties --------------------------------------------------------------------------

rates = st.integers(min_value=0, max_value=10**RATE_DECIMAL_PLACES).map(
    lambda n: Decimal(n).scaleb(-RATE_DECIMAL_PLACES)
)
wagers = st.integers(min_value=1, max_value=MAX_WAGER_AMOUNT)


@given(wager=st.integers(min_value=1, max_value=INT64_MAX), rate=rates)
def test_share_is_the_float_free_floor(wager: int, rate: Decimal) -> None:
    exact = wager * int(rate.scaleb(RATE_DECIMAL_PLACES)) // 10**RATE_DECIMAL_PLACES
    share = rules.share_of(wager, rate)
    assert share == exact
    assert 0 <= share <= wager


@given(
    batch=st.lists(wagers, min_size=1, max_size=30),
    rate=rates,
    start=st.integers(min_value=0, max_value=10**12),
    room=st.one_of(st.none(), st.integers(min_value=0, max_value=10**12)),
)
def test_split_in_order_never_exceeds_share_or_cap_and_sums_match(
    batch: list[int], rate: Decimal, start: int, room: int | None
) -> None:
    cap = None if room is None else start + room
    state = {g: pool(g, current=start, rate=str(rate), seed=1, max_amount=cap) for g in GROUPS}
    running = {g: start for g in GROUPS}
    paid = dict.fromkeys(GROUPS, 0)
    for wager in batch:
        shares = rules.Splitter(state).split(wager, running)
        for g in GROUPS:
            assert 0 <= shares.amounts[g] <= rules.share_of(wager, rate)
            paid[g] += shares.amounts[g]
            if cap is not None:
                assert shares.pools_after[g] <= cap
        assert shares.total == sum(shares.amounts.values())
    for g in GROUPS:
        assert running[g] == start + paid[g]
        uncapped = sum(rules.share_of(w, rate) for w in batch)
        assert paid[g] == (uncapped if cap is None else min(uncapped, cap - start))


@given(
    current=st.integers(min_value=1, max_value=10**15),
    seed=st.integers(min_value=1, max_value=10**15),
    data=st.data(),
)
def test_pay_win_balances(current: int, seed: int, data: st.DataObject) -> None:
    amount = data.draw(st.one_of(st.none(), st.integers(min_value=1, max_value=current)))
    outcome = rules.pay_win(current, seed, amount)
    assert outcome.amount == (current if amount is None else amount)
    assert outcome.pool_after == outcome.pool_before - outcome.amount + outcome.seed_top_up
    assert outcome.pool_after >= seed
    assert outcome.seed_top_up >= 0
    assert outcome.seed_top_up == 0 or outcome.pool_after == seed


@given(
    wager=wagers,
    rate=rates,
    start=st.integers(min_value=0, max_value=INT64_MAX),
    room=st.one_of(st.none(), st.integers(min_value=0, max_value=10**15)),
)
def test_splitter_is_share_of_then_capped_at_the_ceiling(
    wager: int, rate: Decimal, start: int, room: int | None
) -> None:
    """The batch's inlined arithmetic is exactly the rules it stands for."""
    cap = None if room is None else min(INT64_MAX, start + room)
    state = {g: pool(g, current=start, rate=str(rate), seed=1, max_amount=cap) for g in GROUPS}
    shares = rules.Splitter(state).split(wager, {g: start for g in GROUPS})
    for g in GROUPS:
        expected = rules.capped(rules.share_of(wager, rate), start, rules.ceiling(state[g]))
        assert shares.amounts[g] == expected
        assert shares.pools_after[g] == start + expected


# --- reserve, overflow, divert, resets from the reserve ---------------------------------


def test_overflow_is_kept_or_diverted_down_a_chain_and_the_reserve_is_floored_alone() -> None:
    # minor diverts to major, major to mega; mega keeps its overflow.
    state = pools(
        minor=pool(Group.MINOR, current=95, rate="0.01", max_amount=100, reserve_rate="0.0015",
                   target=Group.MAJOR),
        major=pool(Group.MAJOR, current=198, rate="0.01", max_amount=200, target=Group.MEGA),
        mega=pool(Group.MEGA, current=299, rate="0.01", max_amount=300),
    )  # fmt: skip
    assert rules.divert_order(state) == [Group.MINOR, Group.MAJOR, Group.MEGA]
    current = {g: state[g].current_amount for g in GROUPS}
    shares = rules.Splitter(state).split(1000, current)  # 10 offered to each pool
    # minor: 5 fit, 5 go to major (15 offered): 2 fit, 13 go to mega (23): 1 fits, 22 kept.
    assert shares.amounts == {Group.MINOR: 5, Group.MAJOR: 2, Group.MEGA: 1}
    assert shares.overflows == {Group.MINOR: 5, Group.MAJOR: 13, Group.MEGA: 22}
    assert shares.reserves == {Group.MINOR: 1, Group.MAJOR: 0, Group.MEGA: 0}
    assert current == {Group.MINOR: 100, Group.MAJOR: 200, Group.MEGA: 300}
    # Nothing past a cap, no reserve rate: nothing extra is built per wager.
    plain = pools(**{g.value: pool(g, current=0, rate="0.01") for g in GROUPS})
    again = rules.Splitter(plain).split(1000, dict.fromkeys(GROUPS, 0))
    assert (again.overflows, again.reserves) == (None, None)


def test_a_target_is_split_after_the_pool_diverting_into_it() -> None:
    state = pools(
        minor=pool(Group.MINOR, current=0, rate="0.01"),
        major=pool(Group.MAJOR, current=0, rate="0.01", target=Group.MINOR),
        mega=pool(Group.MEGA, current=0, rate="0.01", target=Group.MAJOR),
    )
    assert rules.divert_order(state) == [Group.MEGA, Group.MAJOR, Group.MINOR]


@pytest.mark.parametrize(
    ("current", "reserve", "win", "top_up", "from_reserve"),
    [
        (150, 30, None, 100, 30),  # the reserve pays what it holds, the operator the rest
        (150, 500, None, 100, 100),  # the reserve covers the whole reset
        (150, 0, None, 100, 0),  # no reserve: the operator, as before
        (150, 500, 40, 0, 0),  # still above the seed: no reset
    ],
)
def test_a_reset_comes_from_the_reserve_first(
    current: int, reserve: int, win: int | None, top_up: int, from_reserve: int
) -> None:
    outcome = rules.pay_win(current, 100, win, reserve)
    assert (outcome.seed_top_up, outcome.reserve_top_up) == (top_up, from_reserve)
    assert outcome.operator_top_up == top_up - from_reserve


def test_a_stored_divert_cycle_is_refused_not_split() -> None:
    """A cycle the service never writes but a direct edit of the database can: before, the
    overflow sent back round the cycle reached no meter (minor recorded 2 diverted out,
    major 4, and the 4 sent back to minor vanished). Now no wager is split against it."""
    state = pools(
        minor=pool(Group.MINOR, current=99, rate="0.5", max_amount=100, target=Group.MAJOR),
        major=pool(Group.MAJOR, current=199, rate="0.5", max_amount=200, target=Group.MINOR),
        mega=pool(Group.MEGA, current=0, rate="0.01"),
    )
    with pytest.raises(OverflowTargetCycle, match="minor -> major -> minor"):
        rules.Splitter(state).split(10, {g: state[g].current_amount for g in GROUPS})
