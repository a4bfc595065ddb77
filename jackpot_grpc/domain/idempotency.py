"""Idempotency fingerprints: what a key is bound to when it is first used.

A fingerprint is SHA-256 over a canonical text of the request's meaningful fields, one per
line. Fields cannot hold line breaks (validation rejects control characters), so the text
is unambiguous. Migration 0004 computes the same text in SQL for rows written before it:

    contribute: 'contribute' || E'\\n' || game_id || E'\\n' || wager_amount::text
    win:        'win' || E'\\n' || jackpot_group || E'\\n' || game_id || E'\\n'
                || user_id::text || E'\\n' || coalesce(requested_amount::text, '')

A key is scoped per client (issue 12): the ledger looks it up by (client, key), so the
same key from two clients names two independent requests. The fingerprint is the request
alone; the client is part of the key, not of what the key is bound to.
"""

from __future__ import annotations

import hashlib
import uuid


def _digest(*fields: str) -> bytes:
    return hashlib.sha256("\n".join(fields).encode()).digest()


def contribute_fingerprint(game_id: str, wager_amount: int) -> bytes:
    return _digest("contribute", game_id, str(wager_amount))


def win_fingerprint(group: str, game_id: str, user_id: uuid.UUID, win_amount: int | None) -> bytes:
    """`group` is the group's database key ("minor", "major", "mega")."""
    amount = "" if win_amount is None else str(win_amount)
    return _digest("win", group, game_id, str(user_id), amount)
