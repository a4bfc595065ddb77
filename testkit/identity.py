"""Clients for tests that run the service closed (with credentials), not open.

The shared `settings` fixture runs open (no clients: loopback only, every call allowed);
`secured` turns it into a server with a clients file holding one client per role.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from jackpot_grpc.adapters import clients_file
from jackpot_grpc.config import Settings
from jackpot_grpc.domain.roles import ROLES

Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def add_clients(path: Path, prefix: str = "test") -> dict[str, str]:
    """One client per role, named `<prefix>-<role>`; their tokens by role."""
    tokens: dict[str, str] = {}
    for role in ROLES:
        token = clients_file.add_client(path, f"{prefix}-{role}", role)
        assert token is not None
        tokens[role] = token
    return tokens


def secured(settings: Settings, directory: Path, **auth: Any) -> tuple[Settings, dict[str, str]]:
    """`settings` with a clients file (one client per role) and the tokens by role; `auth`:
    other fields of settings.auth to change (failure_limit=1000...)."""
    path = directory / "clients.json"
    tokens = add_clients(path)
    changed = dataclasses.replace(settings.auth, clients_file=path, **auth)
    return dataclasses.replace(settings, auth=changed), tokens
