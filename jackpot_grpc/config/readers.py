"""Reading one environment variable into a typed value; a bad value raises ConfigError
naming the variable (the CLI prints it and exits 1)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path

from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.transport.peer_address import DEFAULT_TRUSTED_PROXIES, TrustedProxies

Env = dict[str, str]


def read_int(env: Env, name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def read_float(env: Env, name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def read_bounded_int(env: Env, name: str, default: int, low: int, high: int) -> int:
    value = read_int(env, name, default)
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def read_rate_bound(env: Env, name: str, default: Decimal) -> Decimal:
    """An exact decimal in (0, 1]: the most the three contribution rates may sum to."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ConfigError(f"{name} must be a decimal number, got {raw!r}") from None
    if not (value.is_finite() and 0 < value <= 1):
        raise ConfigError(f"{name} must be a decimal above 0 and at most 1, got {raw!r}")
    return value


def read_flag(env: Env, name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "on", "true", "yes"):
        return True
    if raw in ("0", "off", "false", "no"):
        return False
    raise ConfigError(f"{name} must be on or off, got {raw!r}")


def read_choice(env: Env, name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def read_trusted_proxies(env: Env, name: str) -> TrustedProxies:
    raw = env.get(name, "").strip() or DEFAULT_TRUSTED_PROXIES
    try:
        return TrustedProxies.parse(raw)
    except ValueError as exc:
        raise ConfigError(
            f"{name} must list addresses or CIDRs separated by commas (or none): {exc}"
        ) from None


def read_path(env: Env, name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw) if raw else None


def read_dir(env: Env, name: str, default: str) -> Path:
    """A directory the service writes: the setting, else `default` under the current
    directory (where `make` runs; units and images set the variable to a real place)."""
    return (read_path(env, name) or Path(default)).absolute()
