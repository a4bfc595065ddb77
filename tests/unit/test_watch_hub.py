"""The hub's bounds without a database: a watcher's untaken hits are bounded (past the
bound it is cut off), and pool updates it did not take are replaced and counted."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import pytest

from jackpot_grpc.domain.errors import ShuttingDown, WatcherTooSlow
from jackpot_grpc.domain.model import Group, PoolState
from jackpot_grpc.domain.watch import Hit
from jackpot_grpc.service.snapshot import PoolSnapshot
from jackpot_grpc.service.watch_hub import FAN_OUT_SHARE, WatchHub, WatchLimits

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def pool(group: Group, version: int) -> PoolState:
    return PoolState(
        group,
        100 * version,
        100,
        None,
        Decimal("0.01"),
        0,
        0,
        100,
        0,
        0,
        None,
        None,
        None,
        version,
        1,
        NOW,
    )


def hub(**limits: Any) -> tuple[WatchHub, PoolSnapshot]:
    snapshot = PoolSnapshot(ttl=1.0)
    return WatchHub(cast(Any, None), snapshot, WatchLimits(**limits)), snapshot


async def test_a_watcher_past_its_pending_hits_is_cut_off() -> None:
    watch_hub, _ = hub(max_pending_hits=2)
    with watch_hub.watch([], "peer") as watcher:
        hits = [Hit(Group.MINOR, n, NOW, n, n) for n in (1, 2, 3)]
        watch_hub._tell_hits(hits[:2])
        assert (await watcher.next()).hits == hits[:2]  # taken: room again
        watch_hub._tell_hits(hits)
        with pytest.raises(WatcherTooSlow):
            await watcher.next()
    assert watch_hub.counters.watchers_cut == 1
    assert watch_hub.watchers == 0


async def test_untaken_pool_updates_are_replaced_and_counted() -> None:
    watch_hub, snapshot = hub(interval=0.0)
    with watch_hub.watch([Group.MEGA], "peer") as watcher:
        for version in (1, 2, 3):
            snapshot.update([pool(Group.MEGA, version), pool(Group.MINOR, version)])
            watch_hub._flush()
        delivery = await watcher.next()
        assert delivery.pools == [pool(Group.MEGA, 3)]  # the newest, watched pool only
        assert delivery.skipped == 2
        snapshot.update([pool(Group.MINOR, 4)])  # not watched: nothing to tell
        watch_hub._flush()
        assert watcher._pools is None
    assert watch_hub.counters.updates_skipped == 2


async def test_closing_ends_every_watcher_and_refuses_new_ones() -> None:
    watch_hub, _ = hub()
    with watch_hub.watch([], "peer") as watcher:
        await watch_hub.close()
        with pytest.raises(ShuttingDown):
            await watcher.next()
    with pytest.raises(ShuttingDown), watch_hub.watch([], "peer"):
        pass
    assert dataclasses.asdict(watch_hub.counters)["watchers_cut"] == 0


async def test_updates_are_spaced_by_the_time_their_fan_out_takes() -> None:
    """A fan-out that took 0.1 s to reach 90 % of the watchers holds the next update back
    0.1 / FAN_OUT_SHARE, not the 10 ms interval: the calls keep most of the loop."""
    watch_hub, snapshot = hub(interval=0.01)
    with contextlib.ExitStack() as stack:
        watchers = [stack.enter_context(watch_hub.watch([], f"peer{n}")) for n in range(10)]
        snapshot.update([pool(Group.MINOR, 1)])
        watch_hub._flush()
        watch_hub._last_flush -= 0.1  # as if the writes below took 0.1 s
        for watcher in watchers[:9]:
            watch_hub.delivered(await watcher.next(), 1)
        snapshot.update([pool(Group.MINOR, 2)])  # schedules the next flush
        handle = watch_hub._flush_handle
        assert handle is not None
        wait = handle.when() - asyncio.get_running_loop().time()
        assert 0.1 / FAN_OUT_SHARE - 0.1 - 0.05 < wait <= 0.1 / FAN_OUT_SHARE - 0.1 + 0.01
        handle.cancel()


async def test_the_listener_is_wanted_from_the_first_watcher_to_the_last() -> None:
    watch_hub, _ = hub()
    told: list[bool] = []
    watch_hub.start(listen=told.append)
    try:
        assert told == []  # nobody watches: no LISTEN connection
        with watch_hub.watch([], "a"):
            assert told == [True]
            with watch_hub.watch([], "b"):
                assert told == [True]  # once, for the first
            assert told == [True]  # one still watches
        assert told == [True, False]
        with watch_hub.watch([], "c"):
            assert told == [True, False, True]
    finally:
        await watch_hub.close()
    assert told == [True, False, True, False]
