"""AIP-158 paging of the hit history: page sizes and opaque page tokens. Pure.

A token is the cursor of the last win on a page, (created_at, id), and a digest of the
query it belongs to (pool and time range), base64url without padding. It is opaque to
clients (its form may change); a token from another query, or one that does not parse, is
INVALID_ARGUMENT naming `page_token`. It is not a secret: forging one only moves a cursor
through wins the caller may read anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from jackpot_grpc.domain.errors import InvalidArgument
from jackpot_grpc.domain.model import GROUP_CHOICES, Group

DEFAULT_PAGE_SIZE = 25  # the last 25 hits: what a controller must be able to show
MAX_PAGE_SIZE = 1000  # larger asks are cut to this (AIP-158)
_TOKEN_VERSION = 1
_MAX_ID = 2**63 - 1  # wins.id is a bigint


@dataclass(frozen=True)
class WinsQuery:
    group: Group | None
    start: datetime | None
    end: datetime | None
    page_size: int
    after: tuple[datetime, int] | None  # the cursor: older than this (created_at, id)

    def digest(self) -> str:
        return _digest(self.group, self.start, self.end)


def _digest(group: Group | None, start: datetime | None, end: datetime | None) -> str:
    text = "|".join(("" if group is None else group.value, _iso(start), _iso(end)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat()


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument.of("page_size", "must not be negative")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def wins_query(
    group: Group | None,
    group_given: bool,
    start: datetime | None,
    end: datetime | None,
    requested_size: int,
    token: str,
) -> WinsQuery:
    """The checked query, or InvalidArgument naming the field."""
    if group_given and group is None:
        raise InvalidArgument.of("group", GROUP_CHOICES)
    if start is not None and end is not None and end <= start:
        raise InvalidArgument.of("end_time", "must be after start_time")
    size = page_size(requested_size)
    after = None
    if token:
        after = _cursor(token, _digest(group, start, end))
    return WinsQuery(group, start, end, size, after)


def next_token(query: WinsQuery, last: tuple[datetime, int]) -> str:
    doc = {"v": _TOKEN_VERSION, "q": query.digest(), "t": last[0].isoformat(), "i": last[1]}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor(token: str, digest: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        doc = json.loads(raw)
        if doc["v"] != _TOKEN_VERSION:
            raise ValueError("unknown version")
        at, row_id, query = datetime.fromisoformat(doc["t"]), doc["i"], doc["q"]
        if not isinstance(row_id, int) or isinstance(row_id, bool) or at.tzinfo is None:
            raise ValueError("bad cursor")
        if not 0 <= row_id <= _MAX_ID:
            raise ValueError("cursor id out of range")
    # RecursionError: a token of deeply nested JSON ("[[[[..."); ValueError covers
    # UnicodeDecodeError and json's errors.
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError):
        raise InvalidArgument.of(
            "page_token", "is not a page token this service gave (send it back unchanged)"
        ) from None
    if query != digest:
        raise InvalidArgument.of(
            "page_token",
            "belongs to another query: send the same group, start_time and end_time as the"
            " request that gave it",
        )
    return at, row_id
