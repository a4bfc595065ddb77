"""Input rules: every request is checked here before anything is queued or written."""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation

from jackpot_grpc.domain.errors import FieldViolation, InvalidArgument
from jackpot_grpc.domain.model import (
    GROUP_CHOICES,
    ConfigChange,
    ContributeCommand,
    Group,
    PoolConfig,
    WinCommand,
)

MAX_GAME_ID_LENGTH = 128
MAX_KEY_LENGTH = 128
MAX_ACTOR_LENGTH = 128
MAX_REASON_LENGTH = 500
# 10^15 minor units (ten trillion in a two-decimal currency): far above any real wager,
# far enough below int64 that pool totals cannot overflow.
MAX_WAGER_AMOUNT = 10**15
RATE_DECIMAL_PLACES = 10


def _text(
    field: str, value: str, max_length: int, *, required: bool
) -> tuple[str, list[FieldViolation]]:
    text = value.strip()
    if required and not text:
        return text, [FieldViolation(field, "must not be empty")]
    if len(text) > max_length:
        return text, [FieldViolation(field, f"must be at most {max_length} characters")]
    if not text.isprintable():
        return text, [FieldViolation(field, "must not contain control characters")]
    return text, []


def _key(value: str) -> tuple[str | None, list[FieldViolation]]:
    key, problems = _text("idempotency_key", value, MAX_KEY_LENGTH, required=False)
    return (key or None), problems


def _raise_if(problems: list[FieldViolation]) -> None:
    if problems:
        raise InvalidArgument(problems)


def contribute_command(game_id: str, wager_amount: int, idempotency_key: str) -> ContributeCommand:
    game, problems = _text("game_id", game_id, MAX_GAME_ID_LENGTH, required=True)
    if wager_amount <= 0:
        problems.append(FieldViolation("wager_amount", "must be greater than 0"))
    elif wager_amount > MAX_WAGER_AMOUNT:
        problems.append(FieldViolation("wager_amount", f"must be at most {MAX_WAGER_AMOUNT}"))
    key, key_problems = _key(idempotency_key)
    _raise_if(problems + key_problems)
    return ContributeCommand(game_id=game, wager_amount=wager_amount, idempotency_key=key)


def win_command(
    group: Group | None,
    game_id: str,
    user_id: str,
    win_amount: int | None,
    idempotency_key: str,
) -> WinCommand:
    problems: list[FieldViolation] = []
    if group is None:
        problems.append(FieldViolation("group", GROUP_CHOICES))
    game, game_problems = _text("game_id", game_id, MAX_GAME_ID_LENGTH, required=True)
    problems += game_problems
    user: uuid.UUID | None = None
    try:
        user = uuid.UUID(user_id.strip())
    except ValueError:
        problems.append(FieldViolation("user_id", "must be a UUID"))
    if win_amount is not None and win_amount <= 0:
        problems.append(FieldViolation("win_amount", "must be greater than 0 when set"))
    key, key_problems = _key(idempotency_key)
    _raise_if(problems + key_problems)
    assert group is not None and user is not None
    return WinCommand(
        group=group, game_id=game, user_id=user, win_amount=win_amount, idempotency_key=key
    )


def parse_rate(field: str, text: str) -> Decimal:
    """An exact decimal rate from its string form (google.type.Decimal's value)."""
    try:
        rate = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidArgument.of(field, f"{text!r} is not a decimal number") from None
    if not rate.is_finite():
        raise InvalidArgument.of(field, "must be a finite decimal number")
    exponent = rate.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > RATE_DECIMAL_PLACES:
        raise InvalidArgument.of(field, f"must have at most {RATE_DECIMAL_PLACES} decimal places")
    return rate


def config_change(
    group: Group | None,
    contribution_rate: Decimal | None,
    seed_amount: int | None,
    max_amount: int | None,
    clear_max_amount: bool,
    expected_version: int | None,
    actor: str,
    reason: str,
) -> ConfigChange:
    """Checks the shape of a change; `apply_config_change` checks it against the pool."""
    problems: list[FieldViolation] = []
    if group is None:
        problems.append(FieldViolation("group", GROUP_CHOICES))
    if clear_max_amount and max_amount is not None:
        problems.append(FieldViolation("max_amount", "must be unset when clear_max_amount is true"))
    who, actor_problems = _text("actor", actor, MAX_ACTOR_LENGTH, required=False)
    why, reason_problems = _text("reason", reason, MAX_REASON_LENGTH, required=False)
    problems += actor_problems + reason_problems
    if expected_version is not None and expected_version <= 0:
        problems.append(FieldViolation("expected_version", "must be greater than 0 when set"))
    _raise_if(problems)
    assert group is not None
    return ConfigChange(
        group=group,
        contribution_rate=contribution_rate,
        seed_amount=seed_amount,
        max_amount=max_amount,
        clear_max_amount=clear_max_amount,
        expected_version=expected_version,
        actor=who or "unknown",
        reason=why,
    )


def apply_config_change(current: PoolConfig, change: ConfigChange) -> PoolConfig:
    """The pool's config after the change, or InvalidArgument naming every broken rule."""
    rate = (
        current.contribution_rate if change.contribution_rate is None else change.contribution_rate
    )
    seed = current.seed_amount if change.seed_amount is None else change.seed_amount
    if change.clear_max_amount:
        cap: int | None = None
    else:
        cap = current.max_amount if change.max_amount is None else change.max_amount
    problems: list[FieldViolation] = []
    if not Decimal(0) <= rate <= Decimal(1):
        problems.append(FieldViolation("contribution_rate", "must be between 0 and 1"))
    if seed <= 0:
        problems.append(FieldViolation("seed_amount", "must be greater than 0"))
    elif seed > MAX_WAGER_AMOUNT:
        problems.append(FieldViolation("seed_amount", f"must be at most {MAX_WAGER_AMOUNT}"))
    if cap is not None and cap <= seed:
        problems.append(FieldViolation("max_amount", f"must be greater than seed_amount ({seed})"))
    _raise_if(problems)
    return PoolConfig(
        group=current.group,
        contribution_rate=rate,
        seed_amount=seed,
        max_amount=cap,
        version=current.version + 1,
    )
