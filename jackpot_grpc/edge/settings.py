"""The edge's settings (JACKPOT_EDGE_*), read from the environment like Settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.domain.roles import ROLES


@dataclass(frozen=True)
class Limit:
    """What one client may have admitted: calls a second, and calls at once."""

    rate: int
    in_flight: int

    def __post_init__(self) -> None:
        if self.rate < 1 or self.in_flight < 1:
            raise ValueError(f"edge limits must be at least 1, got {self}")


# Per role. A game backend is the busy caller; readers and admins call rarely. The gateway
# role calls nothing through the edge (the gateway reaches the server directly).
DEFAULT_ROLE_LIMITS: dict[str, Limit] = {
    "game": Limit(rate=1000, in_flight=64),
    "reader": Limit(rate=200, in_flight=16),
    "admin": Limit(rate=20, in_flight=4),
    "gateway": Limit(rate=20, in_flight=4),
}
# Everyone without a known token shares this budget (health checks, open mode, mTLS-only
# clients identified by certificate further in).
DEFAULT_ANONYMOUS = Limit(rate=50, in_flight=16)


def parse_limit(raw: str, name: str) -> Limit:
    """`RATE/IN_FLIGHT`, e.g. `1000/64`."""
    rate, sep, in_flight = raw.partition("/")
    try:
        if not sep:
            raise ValueError
        return Limit(int(rate), int(in_flight))
    except ValueError:
        raise ConfigError(
            f"{name} must be RATE/IN_FLIGHT (positive integers, e.g. 1000/64), got {raw!r}"
        ) from None


@dataclass(frozen=True)
class Backend:
    """One server process behind the edge: its gRPC port and its health port."""

    host: str
    grpc_port: int
    health_port: int


@dataclass(frozen=True)
class EdgeSettings:
    grpc_bind: str  # host:port of the public gRPC listener
    rest_bind: str  # host:port of the public REST listener
    stats_bind: str  # host:port of HAProxy's /metrics (Prometheus) and /stats
    servers: tuple[Backend, ...]
    gateways: tuple[str, ...]  # host:port of each REST gateway
    config_dir: Path  # where the generated haproxy.cfg, maps and errorfiles go
    role_limits: dict[str, Limit] = field(default_factory=lambda: dict(DEFAULT_ROLE_LIMITS))
    anonymous: Limit = DEFAULT_ANONYMOUS
    # The most calls every server takes at once from the edge; more wait in the edge's
    # queue up to queue_timeout, then get RESOURCE_EXHAUSTED.
    server_max_in_flight: int = 256
    queue_timeout_ms: int = 250


def role_limits_from_env(env: dict[str, str] | None = None) -> dict[str, Limit]:
    """JACKPOT_EDGE_LIMIT_<ROLE>=RATE/IN_FLIGHT overrides a role's default."""
    env = dict(os.environ if env is None else env)
    limits = dict(DEFAULT_ROLE_LIMITS)
    for role in ROLES:
        name = f"JACKPOT_EDGE_LIMIT_{role.upper()}"
        raw = env.get(name, "").strip()
        if raw:
            limits[role] = parse_limit(raw, name)
    return limits


def anonymous_limit_from_env(env: dict[str, str] | None = None) -> Limit:
    env = dict(os.environ if env is None else env)
    raw = env.get("JACKPOT_EDGE_LIMIT_ANONYMOUS", "").strip()
    return parse_limit(raw, "JACKPOT_EDGE_LIMIT_ANONYMOUS") if raw else DEFAULT_ANONYMOUS
