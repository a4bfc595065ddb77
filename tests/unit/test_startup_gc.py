"""Freezing start-up's objects out of garbage collection (jackpot_grpc.runtime.startup_gc)."""

from __future__ import annotations

import gc

from jackpot_grpc.runtime.startup_gc import freeze_startup_objects


def test_live_objects_are_frozen_and_garbage_is_collected_first() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    gc.unfreeze()
    try:
        alive: list[list[object]] = [[] for _ in range(1000)]
        for _ in range(1000):
            Cycle()  # unreachable cycles: collected before the freeze, not frozen
        frozen = freeze_startup_objects()
        # Frozen objects still die by reference counting, so the count can only shrink.
        assert frozen >= len(alive) and 0 < gc.get_freeze_count() <= frozen
        assert not any(isinstance(o, Cycle) for o in gc.get_objects())  # none left behind
    finally:
        gc.unfreeze()
