"""The batcher's queueing, driven through its BatchApplier port with an in-memory applier.

No database: what is checked here is the queue (batch sizes, linger, bound, skipped
cancellations, shutdown), not the SQL (tests/integration/test_batcher.py does that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from jackpot_grpc.domain.errors import DomainError, Overloaded, Unavailable
from jackpot_grpc.domain.model import (
    GROUPS,
    ContributeCommand,
    ContributionResult,
    ContributionShares,
)
from jackpot_grpc.service.batcher import ContributionBatcher, DirectContributor

NO_SHARES = ContributionShares(amounts=dict.fromkeys(GROUPS, 0), pools_after={})


class FakeApplier:
    """Records each batch it is given; holds every batch until `release` is set."""

    def __init__(self, *, held: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        if not held:
            self.release.set()

    async def contribute_many(
        self, commands: Sequence[ContributeCommand]
    ) -> list[ContributionResult | DomainError]:
        self.batches.append([c.wager_amount for c in commands])
        self.entered.set()
        await self.release.wait()
        now = datetime.now(UTC)
        return [
            ContributionResult(c.wager_amount, NO_SHARES, now, replayed=False) for c in commands
        ]


def command(wager: int) -> ContributeCommand:
    return ContributeCommand(game_id="game", wager_amount=wager, idempotency_key=None, client="c")


async def settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_queued_calls_share_one_batch_in_order_and_each_gets_its_result() -> None:
    applier = FakeApplier()
    batcher = ContributionBatcher(applier, max_batch=8, max_queue=100)
    calls = [asyncio.create_task(batcher.contribute(command(w))) for w in range(1, 6)]
    await settle()  # all five queued before the worker starts
    batcher.start()
    results = await asyncio.gather(*calls)
    assert applier.batches == [[1, 2, 3, 4, 5]]
    assert [r.contribution_id for r in results] == [1, 2, 3, 4, 5]
    assert (batcher.batches, batcher.batched) == (1, 5)
    await batcher.close()


async def test_a_batch_never_exceeds_max_batch() -> None:
    applier = FakeApplier()
    batcher = ContributionBatcher(applier, max_batch=2, max_queue=100)
    calls = [asyncio.create_task(batcher.contribute(command(w))) for w in range(1, 6)]
    await settle()
    batcher.start()
    await asyncio.gather(*calls)
    assert applier.batches == [[1, 2], [3, 4], [5]]
    await batcher.close()


async def test_while_a_batch_commits_the_next_one_forms() -> None:
    applier = FakeApplier(held=True)
    batcher = ContributionBatcher(applier, max_batch=8, max_queue=100)
    batcher.start()
    first = asyncio.create_task(batcher.contribute(command(1)))
    await applier.entered.wait()
    later = [asyncio.create_task(batcher.contribute(command(w))) for w in (2, 3, 4)]
    await settle()
    applier.release.set()
    await asyncio.gather(first, *later)
    assert applier.batches == [[1], [2, 3, 4]]
    await batcher.close()


async def test_linger_waits_for_more_calls_when_others_are_queued() -> None:
    applier = FakeApplier()
    batcher = ContributionBatcher(applier, max_batch=8, max_queue=100, linger=0.05)
    early = [asyncio.create_task(batcher.contribute(command(w))) for w in (1, 2)]
    await settle()
    batcher.start()
    await settle()  # the worker took call 1, saw call 2 queued, and lingers
    late = asyncio.create_task(batcher.contribute(command(3)))
    await asyncio.gather(*early, late)
    assert applier.batches == [[1, 2, 3]]
    await batcher.close()


async def test_without_linger_a_lone_caller_is_served_at_once() -> None:
    applier = FakeApplier()
    batcher = ContributionBatcher(applier, max_batch=8, max_queue=100, linger=10.0)
    batcher.start()
    # Alone in the queue: no linger, so this returns long before 10 s.
    result = await asyncio.wait_for(batcher.contribute(command(7)), 1.0)
    assert result.contribution_id == 7
    assert applier.batches == [[7]]
    await batcher.close()


async def test_a_cancelled_caller_is_skipped_not_applied() -> None:
    applier = FakeApplier()
    batcher = ContributionBatcher(applier, max_batch=8, max_queue=100)
    calls = [asyncio.create_task(batcher.contribute(command(w))) for w in (1, 2, 3)]
    await settle()
    calls[1].cancel()  # its deadline passed while it was queued
    batcher.start()
    done = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert applier.batches == [[1, 3]]
    await batcher.close()


async def test_a_full_queue_refuses_at_once_with_overloaded() -> None:
    applier = FakeApplier(held=True)
    batcher = ContributionBatcher(applier, max_batch=1, max_queue=2)
    batcher.start()
    in_batch = asyncio.create_task(batcher.contribute(command(1)))
    await applier.entered.wait()  # the worker holds call 1; the queue is empty again
    queued = [asyncio.create_task(batcher.contribute(command(w))) for w in (2, 3)]
    await settle()
    with pytest.raises(Overloaded, match="queue is full"):
        await batcher.contribute(command(4))
    applier.release.set()
    await asyncio.gather(in_batch, *queued)
    assert applier.batches == [[1], [2], [3]]
    await batcher.close()


async def test_a_failed_batch_fails_each_of_its_callers() -> None:
    class Failing(FakeApplier):
        async def contribute_many(
            self, commands: Sequence[ContributeCommand]
        ) -> list[ContributionResult | DomainError]:
            raise Unavailable("database unavailable: test")

    batcher = ContributionBatcher(Failing(), max_batch=8, max_queue=100)
    calls = [asyncio.create_task(batcher.contribute(command(w))) for w in (1, 2)]
    await settle()
    batcher.start()
    done = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(d) for d in done] == [Unavailable, Unavailable]
    await batcher.close()


async def test_close_refuses_new_calls_and_fails_what_it_cannot_drain() -> None:
    applier = FakeApplier(held=True)
    batcher = ContributionBatcher(applier, max_batch=1, max_queue=10)
    batcher.start()
    stuck = asyncio.create_task(batcher.contribute(command(1)))
    await applier.entered.wait()
    waiting = asyncio.create_task(batcher.contribute(command(2)))
    await settle()
    await batcher.close(budget=0.05)  # the applier never returns
    with pytest.raises(Unavailable, match="stopped while applying"):
        await stuck
    with pytest.raises(Unavailable, match="shutting down"):
        await waiting
    with pytest.raises(Unavailable, match="shutting down"):
        await batcher.contribute(command(3))
    assert applier.batches == [[1]]


async def test_direct_contributor_bounds_calls_in_flight() -> None:
    applier = FakeApplier(held=True)
    direct = DirectContributor(applier, max_in_flight=1)
    first = asyncio.create_task(direct.contribute(command(1)))
    await applier.entered.wait()
    with pytest.raises(Overloaded, match="in flight"):
        await direct.contribute(command(2))
    applier.release.set()
    assert (await first).contribution_id == 1
    assert applier.batches == [[1]]
