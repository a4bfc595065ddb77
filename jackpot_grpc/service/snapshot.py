"""An in-process copy of the pools, so GetPools does not touch the database on the hot path.

Every commit of this process refreshes it with the rows it wrote (RETURNING). Writes by
other processes are seen once the copy is older than its TTL and is read again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from jackpot_grpc.domain.model import GROUPS, Group, PoolState


class PoolSnapshot:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._pools: dict[Group, PoolState] = {}
        self._loaded_at = float("-inf")
        self._subscribers: list[Callable[[], None]] = []

    def subscribe(self, moved: Callable[[], None]) -> None:
        """`moved()` is called whenever a pool's version moves forward (WatchPools)."""
        self._subscribers.append(moved)

    def update(self, pools: Iterable[PoolState]) -> None:
        """Keep the newest version of each pool: commits may report back out of order."""
        moved = False
        for pool in pools:
            known = self._pools.get(pool.group)
            if known is None or pool.version >= known.version:
                moved = moved or known is None or pool.version > known.version
                self._pools[pool.group] = pool
        if moved:
            for subscriber in self._subscribers:
                subscriber()

    def replace(self, pools: Iterable[PoolState]) -> None:
        """A full read from the database: resets the TTL clock."""
        self.update(pools)
        self._loaded_at = time.monotonic()

    def latest(self) -> list[PoolState]:
        """Whatever is known, however old: good enough for gauges, never for answers."""
        return [self._pools[g] for g in GROUPS if g in self._pools]

    def fresh(self) -> list[PoolState] | None:
        if len(self._pools) < len(GROUPS) or time.monotonic() - self._loaded_at > self.ttl:
            return None
        return [self._pools[g] for g in GROUPS]
