"""The value objects made per contribution: their own __init__ (a fast one, domain.model)
keeps them frozen dataclasses, and a Contribute answer's created_at, worked out once per
batch, is the Timestamp protobuf would make of it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from jackpot_grpc.domain import validation
from jackpot_grpc.domain.errors import InvalidArgument
from jackpot_grpc.domain.model import (
    GROUPS,
    ContributeCommand,
    ContributionResult,
    ContributionShares,
    Group,
)
from jackpot_grpc.entrypoints import convert


def shares() -> ContributionShares:
    return ContributionShares({g: 1 for g in GROUPS}, {g: 100 for g in GROUPS})


def test_fields_defaults_and_equality_are_the_dataclass_ones() -> None:
    made = shares()
    assert made.reserves is None and made.overflows is None and made.sharing == GROUPS
    assert made == shares()
    result = ContributionResult(7, made, datetime(2026, 1, 2, tzinfo=UTC), replayed=False)
    assert result.leaf_index == 0
    assert dataclasses.replace(result, replayed=True) == ContributionResult(
        7, made, datetime(2026, 1, 2, tzinfo=UTC), True, 0
    )
    command = ContributeCommand(game_id="g", wager_amount=10, idempotency_key=None, client="c")
    assert dataclasses.astuple(command) == ("g", 10, None, "c")


@pytest.mark.parametrize("name", ["amounts", "sharing"])
def test_shares_stay_frozen(name: str) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(shares(), name, None)


def test_result_and_command_stay_frozen() -> None:
    result = ContributionResult(1, shares(), datetime(2026, 1, 2, tzinfo=UTC), False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.replayed = True  # type: ignore[misc]
    command = ContributeCommand("g", 10, "k", "c")
    with pytest.raises(dataclasses.FrozenInstanceError):
        command.wager_amount = 11  # type: ignore[misc]
    assert command.fingerprint == ContributeCommand("g", 10, "k", "c").fingerprint


@pytest.mark.parametrize(
    "created_at",
    [
        datetime(2026, 12, 6, 19, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 12, 6, 21, 0, 0, 999999, tzinfo=timezone(timedelta(hours=2))),
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
    ],
)
def test_contribute_answer_carries_created_at_as_protobuf_would(created_at: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(created_at)
    result = ContributionResult(5, shares(), created_at, replayed=False, leaf_index=4)
    for _ in range(2):  # the second answer comes from the cache
        answer = convert.contribute_response(result)
        assert answer.HasField("created_at")
        assert answer.created_at == expected
        assert answer.created_at.ToDatetime(tzinfo=UTC) == created_at
    assert answer.contribution_id == 5 and answer.leaf_index == 4
    assert [c.amount for c in answer.contributions] == [1, 1, 1]
    assert answer.total_contribution == 3


@pytest.mark.parametrize(
    ("game", "wager", "key", "expected_key"),
    [
        ("g" * 128, 5, "k" * 128, "k" * 128),  # every limit reached, none passed
        ("game", 1, "", None),  # no key
        ("ünïcode", 10, "ключ", "ключ"),
    ],
)
def test_a_valid_contribution_is_taken_as_sent(
    game: str, wager: int, key: str, expected_key: str | None
) -> None:
    command = validation.contribute_command(game, wager, key, "client-a", max_wager=wager)
    assert command == ContributeCommand(game, wager, expected_key, "client-a")


@pytest.mark.parametrize(
    ("game", "wager", "key", "field"),
    [
        ("g" * 129, 5, "", "game_id"),
        ("", 5, "", "game_id"),
        (" g", 5, "", "game_id"),
        ("g\n", 5, "", "game_id"),
        ("g\x00", 5, "", "game_id"),
        ("g", 0, "", "wager_amount"),
        ("g", 11, "", "wager_amount"),
        ("g", 5, "k" * 129, "idempotency_key"),
        ("g", 5, "k ", "idempotency_key"),
        ("g", 5, "k\x07", "idempotency_key"),
    ],
)
def test_an_invalid_contribution_names_its_field(
    game: str, wager: int, key: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validation.contribute_command(game, wager, key, "client-a", max_wager=10)
    assert [v.field for v in raised.value.violations] == [field]


def test_answers_that_share_a_cached_part_keep_their_own_fields() -> None:
    """Shares split in divert order (not GROUPS order), a replay of the same shares, and
    another row: each answer has its own amounts in GROUPS order, ids and flags."""
    created_at = datetime(2026, 12, 6, 19, 0, 0, 1, tzinfo=UTC)
    mega_first = ContributionShares(
        {Group.MEGA: 3, Group.MINOR: 1, Group.MAJOR: 2},
        {Group.MEGA: 30, Group.MINOR: 10, Group.MAJOR: 20},
        sharing=(Group.MINOR, Group.MEGA),
    )
    written = ContributionResult(1, mega_first, created_at, replayed=False, leaf_index=9)
    replayed = dataclasses.replace(written, replayed=True)
    other = ContributionResult(2, shares(), created_at, replayed=False, leaf_index=10)
    answers = [convert.contribute_response(r) for r in (written, replayed, written, other)]
    first, again, same, last = answers
    assert [c.amount for c in first.contributions] == [1, 2, 3]
    assert [c.amount for c in first.pool_amounts] == [10, 20, 30]
    assert list(first.sharing_groups) == [
        convert.group_to_proto(Group.MINOR),
        convert.group_to_proto(Group.MEGA),
    ]
    assert first.total_contribution == 6 and not first.replayed
    assert again.replayed and again.contribution_id == 1
    assert same == first
    assert last.contribution_id == 2 and last.leaf_index == 10
    assert [c.amount for c in last.pool_amounts] == [100, 100, 100]
    assert len(last.sharing_groups) == 3
