"""Random references, so tests never collide and never need to truncate tables.

After cosmicpython's `tests/random_refs.py`: every test names its games, players and
idempotency keys with a random suffix.
"""

from __future__ import annotations

import uuid


def random_suffix() -> str:
    return uuid.uuid4().hex[:8]


def random_game_id(name: str = "") -> str:
    return f"game-{name}-{random_suffix()}"


def random_key(name: str = "") -> str:
    return f"key-{name}-{random_suffix()}"


def random_user_id() -> uuid.UUID:
    return uuid.uuid4()


def random_user() -> str:
    """A user id as the wire carries it (a UUID string)."""
    return str(random_user_id())
