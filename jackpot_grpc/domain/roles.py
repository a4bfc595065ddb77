"""Least privilege: which role may call which JackpotService method.

A method listed under no role is refused to everyone; grpc.health.v1 and reflection are
not JackpotService methods and stay open.
"""

from __future__ import annotations

from collections.abc import Iterable

# A gateway (the REST sidecar, a proxy) may vouch for its callers' addresses
# (`jackpot-gateway-authorization` metadata, or its mTLS certificate) and call nothing.
GATEWAY_ROLE = "gateway"
ROLES = ("game", "reader", "admin", GATEWAY_ROLE)
READS = frozenset(
    {"GetPools", "GetStatistics", "GetConfig", "WatchPools", "GetLedgerProof", "ListWins"}
)
ROLE_METHODS: dict[str, frozenset[str]] = {
    "game": READS | {"Contribute", "ContributeBatch", "Win"},
    "reader": READS,
    "admin": READS | {"UpdateConfig", "SuspendPool", "ResumePool"},
    GATEWAY_ROLE: frozenset(),
}


def may_call(roles: Iterable[str], method: str) -> bool:
    return any(method in ROLE_METHODS.get(role, ()) for role in roles)


def roles_for(method: str) -> list[str]:
    return [role for role, methods in ROLE_METHODS.items() if method in methods]
