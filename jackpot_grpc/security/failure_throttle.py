"""Refuse, for a while, a peer that keeps failing authentication (bounded memory).

After `limit` failures within `window` seconds from one caller key, every call from it is
refused for `block_seconds`, valid credentials or not: a token guesser learns nothing
more during the block. At most `max_peers` keys are remembered (least recently failing
forgotten first), so a flood of addresses cannot grow the table without bound.

The server keys it on each caller (entrypoints/auth.py); the REST gateway keeps one of its
own, keyed on each HTTP caller, so a flood of bad tokens stops at the gateway.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Failures:
    window_start: float
    count: int = 0
    blocked_until: float = 0.0


class FailureThrottle:
    def __init__(
        self,
        limit: int,
        window: float,
        block_seconds: float,
        *,
        max_peers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.block_seconds = block_seconds
        self._max_peers = max_peers
        self._clock = clock
        self._peers: OrderedDict[str, _Failures] = OrderedDict()

    def blocked(self, peer: str) -> bool:
        entry = self._peers.get(peer)
        return entry is not None and entry.blocked_until > self._clock()

    def failed(self, peer: str) -> bool:
        """Count one failure; True when it starts a block."""
        now = self._clock()
        entry = self._peers.get(peer)
        if entry is None or now - entry.window_start > self.window:
            entry = self._peers[peer] = _Failures(window_start=now)
        self._peers.move_to_end(peer)
        entry.count += 1
        while len(self._peers) > self._max_peers:
            self._peers.popitem(last=False)
        if entry.count < self.limit:
            return False
        entry.blocked_until = now + self.block_seconds
        entry.count, entry.window_start = 0, now
        return True
