"""Input rules: every request is checked here before anything is queued or written."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from decimal import Context, Decimal, Inexact, InvalidOperation

from jackpot_grpc.domain.errors import FieldViolation, InvalidArgument, RateSumExceeded
from jackpot_grpc.domain.model import (
    GROUP_CHOICES,
    ConfigChange,
    ContributeCommand,
    Group,
    OverflowPolicy,
    PoolConfig,
    WinCommand,
)

MAX_GAME_ID_LENGTH = 128
MAX_KEY_LENGTH = 128
MAX_ACTOR_LENGTH = 128
MAX_REASON_LENGTH = 500
# The default largest wager (JACKPOT_MAX_WAGER): 10^15 minor units (ten trillion in a
# two-decimal currency), far above any real wager, far below int64.
MAX_WAGER_AMOUNT = 10**15
RATE_DECIMAL_PLACES = 10
# The default bound on the three rates' sum (JACKPOT_MAX_RATE_SUM): above 1, a wager
# would put more into the pools than it is.
MAX_RATE_SUM = Decimal(1)
_RATE_STEP = Decimal(1).scaleb(-RATE_DECIMAL_PLACES)
# Room for any rate of at most 18 integer and RATE_DECIMAL_PLACES decimal digits.
_EXACT = Context(prec=40, traps=[Inexact, InvalidOperation])
_MAX_RATE_ADJUSTED = 17


def _text(
    field: str, value: str, max_length: int, *, required: bool
) -> tuple[str, list[FieldViolation]]:
    """Free text (actor, reason): surrounding whitespace is trimmed."""
    text = value.strip()
    return text, _checked(field, text, max_length, required=required)


def _exact(
    field: str, value: str, max_length: int, *, required: bool
) -> tuple[str, list[FieldViolation]]:
    """An identifier, taken exactly as sent: surrounding whitespace is an error, never
    trimmed, so two spellings can never name the same key, game or user."""
    if value != value.strip():
        return value, [FieldViolation(field, "must not start or end with whitespace")]
    return value, _checked(field, value, max_length, required=required)


def _checked(field: str, text: str, max_length: int, *, required: bool) -> list[FieldViolation]:
    if required and not text:
        return [FieldViolation(field, "must not be empty")]
    if len(text) > max_length:
        return [FieldViolation(field, f"must be at most {max_length} characters")]
    if not text.isprintable():
        return [FieldViolation(field, "must not contain control characters")]
    return []


def _plainly_valid(text: str, max_length: int) -> bool:
    """Whether `text` passes _exact, required: not empty, no surrounding whitespace, within
    `max_length`, printable."""
    return bool(text) and len(text) <= max_length and text.isprintable() and text == text.strip()


def _key(value: str) -> tuple[str | None, list[FieldViolation]]:
    key, problems = _exact("idempotency_key", value, MAX_KEY_LENGTH, required=False)
    return (key or None), problems


def _user(value: str) -> tuple[uuid.UUID | None, list[FieldViolation]]:
    if value != value.strip():
        return None, [FieldViolation("user_id", "must not start or end with whitespace")]
    try:
        return uuid.UUID(value), []
    except ValueError:
        return None, [FieldViolation("user_id", "must be a UUID")]


def _raise_if(problems: list[FieldViolation]) -> None:
    if problems:
        raise InvalidArgument(problems)


def contribute_command(
    game_id: str,
    wager_amount: int,
    idempotency_key: str,
    client: str,
    max_wager: int = MAX_WAGER_AMOUNT,
) -> ContributeCommand:
    if (
        0 < wager_amount <= max_wager
        and _plainly_valid(game_id, MAX_GAME_ID_LENGTH)
        and (not idempotency_key or _plainly_valid(idempotency_key, MAX_KEY_LENGTH))
    ):
        # Every check below passes (a ContributeBatch runs this a thousand times a call):
        # the same command, without gathering the problems there are none of.
        return ContributeCommand(game_id, wager_amount, idempotency_key or None, client)
    game, problems = _exact("game_id", game_id, MAX_GAME_ID_LENGTH, required=True)
    if wager_amount <= 0:
        problems.append(FieldViolation("wager_amount", "must be greater than 0"))
    elif wager_amount > max_wager:
        problems.append(FieldViolation("wager_amount", f"must be at most {max_wager}"))
    key, key_problems = _key(idempotency_key)
    _raise_if(problems + key_problems)
    return ContributeCommand(
        game_id=game, wager_amount=wager_amount, idempotency_key=key, client=client
    )


def win_command(
    group: Group | None,
    game_id: str,
    user_id: str,
    win_amount: int | None,
    idempotency_key: str,
    client: str,
) -> WinCommand:
    problems: list[FieldViolation] = []
    if group is None:
        problems.append(FieldViolation("group", GROUP_CHOICES))
    game, game_problems = _exact("game_id", game_id, MAX_GAME_ID_LENGTH, required=True)
    user, user_problems = _user(user_id)
    problems += game_problems + user_problems
    if win_amount is not None and win_amount <= 0:
        problems.append(FieldViolation("win_amount", "must be greater than 0 when set"))
    key, key_problems = _key(idempotency_key)
    _raise_if(problems + key_problems)
    assert group is not None and user is not None
    return WinCommand(
        group=group,
        game_id=game,
        user_id=user,
        win_amount=win_amount,
        idempotency_key=key,
        client=client,
    )


# google.type.Decimal's grammar, in ASCII: [sign] significand [exponent]. Python's
# Decimal() also reads surrounding whitespace, `_` separators, every script's digits
# (`٠.٥` is 0.5) and NaN/Infinity; none of those is a rate.
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_rate(field: str, text: str) -> Decimal:
    """An exact decimal rate from its string form (google.type.Decimal's value), in its
    canonical form, RATE_DECIMAL_PLACES places as the database keeps it: `0E+999999999`
    is 0.0000000000, `0.50000000000000` is 0.5000000000. Its range (0 to 1) is checked
    with the config it goes into (apply_config_change)."""
    if not _DECIMAL_TEXT.fullmatch(text):
        raise InvalidArgument.of(
            field,
            f"{text!r} is not a decimal number (digits 0-9, an optional sign, point and"
            " exponent; no spaces or separators)",
        )
    try:
        rate = Decimal(text)
    except InvalidOperation:
        raise InvalidArgument.of(field, f"{text!r} is not a decimal number") from None
    if rate.is_zero():
        return Decimal(0).quantize(_RATE_STEP)  # -0 and 0E+999999999 alike
    if rate.adjusted() > _MAX_RATE_ADJUSTED:  # 1E+999999999: no rate, and too big to scale
        raise InvalidArgument.of(field, "must be between 0 and 1")
    try:
        return rate.quantize(_RATE_STEP, context=_EXACT)
    except (Inexact, InvalidOperation):
        raise InvalidArgument.of(
            field, f"must have at most {RATE_DECIMAL_PLACES} decimal places"
        ) from None


def decimal_text(value: Decimal) -> str:
    """A decimal in plain notation without trailing zeros: 0.005, 0, 1 (never 0E-10)."""
    return format(value.normalize(_EXACT) if value else Decimal(0), "f")


def rate_text(rate: Decimal) -> str:
    """A rate as the API shows it: plain notation, RATE_DECIMAL_PLACES places, as the
    database keeps it (0.0050000000, 0.0000000000; never 0E-10 or 0E+999999999)."""
    return format(rate.quantize(_RATE_STEP, context=_EXACT), "f")


def check_rate_sum(
    rates: Iterable[Decimal], bound: Decimal = MAX_RATE_SUM, field: str = "contribution_rate"
) -> None:
    """The pools' rates together, display and reserve rates alike, may not exceed `bound`
    (at most 1): RateSumExceeded naming `field`."""
    total = sum(rates, Decimal(0))
    if total > bound:
        raise RateSumExceeded(
            [
                FieldViolation(
                    field,
                    f"the three pools' rates would sum to {decimal_text(total)},"
                    f" above the limit of {decimal_text(bound)} (display and reserve"
                    " rates together)",
                )
            ]
        )


def config_change(
    group: Group | None,
    contribution_rate: Decimal | None,
    seed_amount: int | None,
    max_amount: int | None,
    clear_max_amount: bool,
    expected_version: int | None,
    actor: str,
    reason: str,
    apply_at_next_win: bool = False,
    *,
    reserve_rate: Decimal | None = None,
    overflow_policy: OverflowPolicy | None = None,
    overflow_target: Group | None = None,
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
        reserve_rate=reserve_rate,
        overflow_policy=overflow_policy,
        overflow_target=overflow_target,
        apply_at_next_win=apply_at_next_win,
    )


def lifecycle_change(
    group: Group | None, actor: str, reason: str, *, reason_required: bool
) -> tuple[Group, str, str]:
    """SuspendPool / ResumePool: (group, actor, reason), checked like UpdateConfig's."""
    problems: list[FieldViolation] = []
    if group is None:
        problems.append(FieldViolation("group", GROUP_CHOICES))
    who, actor_problems = _text("actor", actor, MAX_ACTOR_LENGTH, required=False)
    why, reason_problems = _text("reason", reason, MAX_REASON_LENGTH, required=reason_required)
    _raise_if(problems + actor_problems + reason_problems)
    assert group is not None
    return group, who or "unknown", why


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
    reserve = current.reserve_rate if change.reserve_rate is None else change.reserve_rate
    if not Decimal(0) <= reserve <= Decimal(1):
        problems.append(FieldViolation("reserve_rate", "must be between 0 and 1"))
    policy, target = _overflow(current, change, problems)
    _raise_if(problems)
    return PoolConfig(
        group=current.group,
        contribution_rate=rate,
        seed_amount=seed,
        max_amount=cap,
        version=current.version + 1,
        reserve_rate=reserve,
        overflow_policy=policy,
        overflow_target=target,
    )


def _overflow(
    current: PoolConfig, change: ConfigChange, problems: list[FieldViolation]
) -> tuple[OverflowPolicy, Group | None]:
    """The overflow policy and target after `change`. DIVERT needs a target other than
    the pool itself (a target alone implies DIVERT); ACCUMULATE takes none and drops the
    current one. Cycles through other pools are the service's check (check_divert_cycle)."""
    policy = change.overflow_policy
    if policy is None:
        policy = OverflowPolicy.DIVERT if change.overflow_target else current.overflow_policy
    if policy is OverflowPolicy.ACCUMULATE:
        if change.overflow_target is not None:
            problems.append(
                FieldViolation("overflow_target", "must be unset with OVERFLOW_POLICY_ACCUMULATE")
            )
        return policy, None
    target = change.overflow_target or current.overflow_target
    if target is None:
        problems.append(
            FieldViolation("overflow_target", "must name a pool with OVERFLOW_POLICY_DIVERT")
        )
    elif target is current.group:
        problems.append(FieldViolation("overflow_target", "must be another pool, not itself"))
    return policy, target


def check_divert_cycle(group: Group, targets: Mapping[Group, Group | None]) -> None:
    """Following each pool's overflow target from `group` must end at a pool that keeps its
    overflow, never come back: a cycle would pass an overflow around for ever."""
    path, at = [group], targets.get(group)
    while at is not None:
        path.append(at)
        if at is group or path.count(at) > 1:
            chain = " -> ".join(g.value for g in path)
            raise InvalidArgument.of("overflow_target", f"would divert in a cycle: {chain}")
        at = targets.get(at)
