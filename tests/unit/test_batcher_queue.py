"""DirectContributor (JACKPOT_BATCHING=off), driven through its BatchApplier port with an
in-memory applier: the bound on calls in flight, no database. The batcher's own queue runs
on its thread against a real database (tests/integration/test_batch_thread.py,
tests/integration/test_batcher.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from jackpot_grpc.domain.errors import DomainError, Overloaded
from jackpot_grpc.domain.model import (
    GROUPS,
    ContributeCommand,
    ContributionResult,
    ContributionShares,
)
from jackpot_grpc.service.batcher import DirectContributor

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
