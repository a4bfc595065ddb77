"""Input rules: every rejection names the field it is about."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from jackpot_grpc.domain.errors import FieldViolation, InvalidArgument, RateSumExceeded
from jackpot_grpc.domain.model import ConfigChange, Group, PoolConfig
from jackpot_grpc.domain.validation import (
    MAX_GAME_ID_LENGTH,
    MAX_KEY_LENGTH,
    MAX_WAGER_AMOUNT,
    apply_config_change,
    check_rate_sum,
    config_change,
    contribute_command,
    decimal_text,
    parse_rate,
    rate_text,
    win_command,
)
from testkit.random_refs import random_user

CLIENT = "game-a"


def fields(exc: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in exc.value.violations]


# --- Contribute --------------------------------------------------------------------------


def test_contribute_command_keeps_values_exactly() -> None:
    command = contribute_command("slots-1", 1000, "k 1", CLIENT)
    assert (command.game_id, command.wager_amount, command.idempotency_key, command.client) == (
        "slots-1",
        1000,
        "k 1",
        CLIENT,
    )


def test_contribute_command_empty_key_means_no_key() -> None:
    assert contribute_command("slots", 1, "", CLIENT).idempotency_key is None


@pytest.mark.parametrize("key", [" k-1 ", "k-1 ", "\tk-1", "   "])
def test_keys_with_surrounding_whitespace_are_rejected_not_trimmed(key: str) -> None:
    """Defect 8: " k-1 " used to be stored (and replayed) as "k-1"."""
    with pytest.raises(InvalidArgument) as exc:
        contribute_command("slots", 1, key, CLIENT)
    assert exc.value.violations == [
        FieldViolation("idempotency_key", "must not start or end with whitespace")
    ]


def test_the_largest_wager_is_a_setting() -> None:
    assert contribute_command("slots", 500, "", CLIENT, max_wager=500).wager_amount == 500
    with pytest.raises(InvalidArgument) as exc:
        contribute_command("slots", 501, "", CLIENT, max_wager=500)
    assert exc.value.violations == [FieldViolation("wager_amount", "must be at most 500")]


@pytest.mark.parametrize(
    ("game_id", "description"),
    [
        ("", "must not be empty"),
        ("   \t ", "must not start or end with whitespace"),
        (" slots", "must not start or end with whitespace"),
        ("x" * (MAX_GAME_ID_LENGTH + 1), f"must be at most {MAX_GAME_ID_LENGTH} characters"),
        ("slots\x00", "must not contain control characters"),
        ("slo\nts", "must not contain control characters"),
        ("sl\x1bots", "must not contain control characters"),
    ],
)
def test_contribute_command_rejects_bad_game_id(game_id: str, description: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        contribute_command(game_id, 100, "", CLIENT)
    assert exc.value.violations == [FieldViolation("game_id", description)]
    assert f"game_id: {description}" in exc.value.message


def test_contribute_command_accepts_game_id_at_max_length() -> None:
    assert (
        contribute_command("x" * MAX_GAME_ID_LENGTH, 1, "", CLIENT).game_id
        == "x" * MAX_GAME_ID_LENGTH
    )


@pytest.mark.parametrize(
    ("wager", "description"),
    [
        (0, "must be greater than 0"),
        (-1, "must be greater than 0"),
        (-(2**63), "must be greater than 0"),
        (MAX_WAGER_AMOUNT + 1, f"must be at most {MAX_WAGER_AMOUNT}"),
        (2**63 - 1, f"must be at most {MAX_WAGER_AMOUNT}"),
    ],
)
def test_contribute_command_rejects_bad_wager(wager: int, description: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        contribute_command("slots", wager, "", CLIENT)
    assert exc.value.violations == [FieldViolation("wager_amount", description)]


def test_contribute_command_accepts_max_wager() -> None:
    assert (
        contribute_command("slots", MAX_WAGER_AMOUNT, "", CLIENT).wager_amount == MAX_WAGER_AMOUNT
    )


def test_contribute_command_reports_every_bad_field_at_once() -> None:
    with pytest.raises(InvalidArgument) as exc:
        contribute_command("", 0, "k" * (MAX_KEY_LENGTH + 1), CLIENT)
    assert fields(exc) == ["game_id", "wager_amount", "idempotency_key"]


# --- Win ---------------------------------------------------------------------------------


def test_win_command_parses_user_and_amount() -> None:
    user = random_user()
    command = win_command(Group.MAJOR, "slots", user, 50, "w1", CLIENT)
    assert command.group is Group.MAJOR
    assert command.user_id == uuid.UUID(user)
    assert (command.game_id, command.win_amount, command.idempotency_key) == ("slots", 50, "w1")
    assert command.client == CLIENT


@pytest.mark.parametrize("padded", ["{} ", " {}", "{}\n"])
def test_user_ids_with_surrounding_whitespace_are_rejected(padded: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        win_command(Group.MAJOR, "slots", padded.format(random_user()), 50, "w1", CLIENT)
    assert exc.value.violations == [
        FieldViolation("user_id", "must not start or end with whitespace")
    ]


def test_win_command_whole_pool_has_no_amount() -> None:
    assert win_command(Group.MINOR, "slots", random_user(), None, "", CLIENT).win_amount is None


@pytest.mark.parametrize(
    "user_id", ["", "not-a-uuid", "1234", "zzzzzzzz-1111-2222-3333-444444444444"]
)
def test_win_command_rejects_bad_uuid(user_id: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        win_command(Group.MINOR, "slots", user_id, None, "", CLIENT)
    assert exc.value.violations == [FieldViolation("user_id", "must be a UUID")]


def test_win_command_rejects_unspecified_group() -> None:
    with pytest.raises(InvalidArgument) as exc:
        win_command(None, "slots", random_user(), None, "", CLIENT)
    assert exc.value.violations == [FieldViolation("group", "must be one of minor, major, mega")]


@pytest.mark.parametrize("amount", [0, -1, -(2**63)])
def test_win_command_rejects_non_positive_amount(amount: int) -> None:
    with pytest.raises(InvalidArgument) as exc:
        win_command(Group.MEGA, "slots", random_user(), amount, "", CLIENT)
    assert exc.value.violations == [FieldViolation("win_amount", "must be greater than 0 when set")]


def test_win_command_reports_every_bad_field_at_once() -> None:
    with pytest.raises(InvalidArgument) as exc:
        win_command(None, " ", "nope", 0, "bad\x07key", CLIENT)
    assert fields(exc) == ["group", "game_id", "user_id", "win_amount", "idempotency_key"]


# --- rates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.57", Decimal("0.57")),
        ("+0.005", Decimal("0.005")),
        (".005", Decimal("0.005")),
        ("5.E-3", Decimal("0.005")),
        ("0", Decimal("0")),
        ("1", Decimal("1")),
        ("0.0000000001", Decimal("0.0000000001")),
        ("1e-3", Decimal("0.001")),
        ("0E+999999999", Decimal("0")),
        ("-0", Decimal("0")),
        ("0.50000000000000000000", Decimal("0.5")),
        ("1.0000000000000", Decimal("1")),
    ],
)
def test_parse_rate_is_exact(text: str, expected: Decimal) -> None:
    rate = parse_rate("contribution_rate", text)
    assert rate == expected
    assert rate.as_integer_ratio() == expected.as_integer_ratio()
    # Canonical: the database's scale, never 0E+999999999.
    assert rate.as_tuple().exponent == -10


def test_rates_are_echoed_in_plain_notation() -> None:
    assert rate_text(parse_rate("r", "0E+999999999")) == "0.0000000000"
    assert rate_text(Decimal("0E-10")) == "0.0000000000"
    assert rate_text(Decimal("0.005")) == "0.0050000000"
    assert decimal_text(Decimal("0E-10")) == "0"
    assert decimal_text(Decimal("0.0050000000")) == "0.005"
    assert decimal_text(Decimal("1")) == "1"


@pytest.mark.parametrize(
    ("rates", "bound", "ok"),
    [
        (["0.5", "0.3", "0.2"], "1", True),
        (["1", "1", "1"], "1", False),
        (["0.5", "0.3", "0.2000000001"], "1", False),
        (["0.005", "0.003", "0.002"], "0.01", True),
        (["0.005", "0.003", "0.0021"], "0.01", False),
    ],
)
def test_rate_sum_is_bounded(rates: list[str], bound: str, ok: bool) -> None:
    values = [Decimal(r) for r in rates]
    if ok:
        check_rate_sum(values, Decimal(bound))
        return
    with pytest.raises(RateSumExceeded) as exc:
        check_rate_sum(values, Decimal(bound))
    assert [v.field for v in exc.value.violations] == ["contribution_rate"]
    assert f"above the limit of {bound}" in exc.value.message


NOT_DECIMAL = (
    "is not a decimal number (digits 0-9, an optional sign, point and exponent;"
    " no spaces or separators)"
)


@pytest.mark.parametrize(
    ("text", "description"),
    [
        ("abc", f"'abc' {NOT_DECIMAL}"),
        ("", f"'' {NOT_DECIMAL}"),
        ("0,5", f"'0,5' {NOT_DECIMAL}"),
        ("NaN", f"'NaN' {NOT_DECIMAL}"),
        ("sNaN", f"'sNaN' {NOT_DECIMAL}"),
        ("inf", f"'inf' {NOT_DECIMAL}"),
        ("-Infinity", f"'-Infinity' {NOT_DECIMAL}"),
        (" 0.005 ", f"' 0.005 ' {NOT_DECIMAL}"),
        ("0.005\n", f"'0.005\\n' {NOT_DECIMAL}"),
        ("0_5", f"'0_5' {NOT_DECIMAL}"),
        ("٠.٥", f"'٠.٥' {NOT_DECIMAL}"),  # Arabic-Indic digits, which Decimal() reads
        ("０.５", f"'０.５' {NOT_DECIMAL}"),  # full-width
        ("1e", f"'1e' {NOT_DECIMAL}"),
        (".", f"'.' {NOT_DECIMAL}"),
        ("1e99999999999999999999", "'1e99999999999999999999' is not a decimal number"),
        ("0.00000000001", "must have at most 10 decimal places"),
        ("1E-999999999", "must have at most 10 decimal places"),
        ("1E+999999999", "must be between 0 and 1"),
        ("5e18", "must be between 0 and 1"),
    ],
)
def test_parse_rate_rejects(text: str, description: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_rate("contribution_rate", text)
    assert exc.value.violations == [FieldViolation("contribution_rate", description)]


# --- config ------------------------------------------------------------------------------

CURRENT = PoolConfig(
    group=Group.MINOR,
    contribution_rate=Decimal("0.005"),
    seed_amount=1000,
    max_amount=10000,
    version=3,
)


def change(**overrides: object) -> ConfigChange:
    values: dict[str, object] = {
        "group": Group.MINOR,
        "contribution_rate": None,
        "seed_amount": None,
        "max_amount": None,
        "clear_max_amount": False,
        "expected_version": None,
        "actor": "ops",
        "reason": "",
    }
    values.update(overrides)
    return config_change(**values)  # type: ignore[arg-type]


def test_apply_config_change_keeps_unset_fields_and_bumps_version() -> None:
    after = apply_config_change(CURRENT, change(seed_amount=2000))
    assert after == PoolConfig(Group.MINOR, Decimal("0.005"), 2000, 10000, 4)


def test_apply_config_change_clears_the_cap() -> None:
    after = apply_config_change(CURRENT, change(clear_max_amount=True))
    assert after.max_amount is None


@pytest.mark.parametrize("rate", ["1.5", "-0.1", "1.0000000001"])
def test_rate_out_of_range_is_rejected(rate: str) -> None:
    parsed = parse_rate("contribution_rate", rate)  # well-formed: the range is checked later
    with pytest.raises(InvalidArgument) as exc:
        apply_config_change(CURRENT, change(contribution_rate=parsed))
    assert exc.value.violations == [FieldViolation("contribution_rate", "must be between 0 and 1")]


@pytest.mark.parametrize("rate", ["0", "1"])
def test_rate_bounds_are_allowed(rate: str) -> None:
    assert apply_config_change(CURRENT, change(contribution_rate=Decimal(rate))).version == 4


@pytest.mark.parametrize("seed", [0, -5])
def test_non_positive_seed_is_rejected(seed: int) -> None:
    with pytest.raises(InvalidArgument) as exc:
        apply_config_change(CURRENT, change(seed_amount=seed))
    assert exc.value.violations == [FieldViolation("seed_amount", "must be greater than 0")]


@pytest.mark.parametrize(
    ("seed", "cap"),
    [(None, 1000), (None, 999), (20000, None), (5000, 5000), (None, -1)],
)
def test_max_not_above_seed_is_rejected(seed: int | None, cap: int | None) -> None:
    with pytest.raises(InvalidArgument) as exc:
        apply_config_change(CURRENT, change(seed_amount=seed, max_amount=cap))
    assert fields(exc) == ["max_amount"]
    assert "must be greater than seed_amount" in exc.value.violations[0].description


def test_clear_max_with_max_set_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as exc:
        change(clear_max_amount=True, max_amount=50000)
    assert exc.value.violations == [
        FieldViolation("max_amount", "must be unset when clear_max_amount is true")
    ]


def test_config_change_rejects_unspecified_group_and_bad_version() -> None:
    with pytest.raises(InvalidArgument) as exc:
        change(group=None, expected_version=0)
    assert fields(exc) == ["group", "expected_version"]


def test_config_change_defaults_actor() -> None:
    assert change(actor="  ").actor == "unknown"
    assert change(actor=" alice ").actor == "alice"


def test_every_broken_config_rule_is_named_at_once() -> None:
    with pytest.raises(InvalidArgument) as exc:
        apply_config_change(
            CURRENT, change(contribution_rate=Decimal("2"), seed_amount=0, max_amount=0)
        )
    assert fields(exc) == ["contribution_rate", "seed_amount", "max_amount"]
