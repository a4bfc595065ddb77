"""Group commit: contribute_many batches and the ContributionBatcher on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.domain.errors import (
    IdempotencyKeyReused,
    OutOfRange,
    Overloaded,
    ShuttingDown,
    Unavailable,
)
from jackpot_grpc.domain.model import GROUPS, ContributeCommand, ContributionResult, Group
from jackpot_grpc.service.batcher import ContributionBatcher, DirectContributor
from jackpot_grpc.service.jackpot import JackpotService
from testkit.contributions import applied
from testkit.random_refs import random_game_id, random_key

Pool = AsyncConnectionPool[AsyncConnection[Any]]

DEFAULT_POOLS = {"minor": 10000, "major": 100000, "mega": 1000000}


@pytest.fixture
def service(pool: Pool) -> JackpotService:
    return JackpotService(pool, snapshot_ttl=0)


async def fetch(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    async with await AsyncConnection.connect(database_url) as conn:
        return await (await conn.execute(sql, params)).fetchall()


async def pool_rows(database_url: str) -> dict[str, tuple[int, int, int, int]]:
    rows = await fetch(
        database_url,
        "SELECT jackpot_group, current_amount, total_contributions, contribution_count, version"
        " FROM jackpots",
    )
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def contribution(wager: int, key: str | None = None, client: str = "game-a") -> ContributeCommand:
    # A key is bound to its request: the same key and wager must be the same game too.
    game = random_game_id() if key is None else f"game-{key}"
    return ContributeCommand(game_id=game, wager_amount=wager, idempotency_key=key, client=client)


async def queued(batcher: ContributionBatcher, commands: list[ContributeCommand]) -> list[Any]:
    """Queue every command before the worker runs, so they all land in one batch."""
    tasks = [asyncio.create_task(batcher.contribute(c)) for c in commands]
    await asyncio.sleep(0)  # each task reaches put_nowait
    batcher.start()
    return await asyncio.gather(*tasks, return_exceptions=True)


# --- contribute_many ---------------------------------------------------------------------


async def test_contribute_many_applies_in_order_in_one_transaction(
    service: JackpotService, database_url: str
) -> None:
    results = applied(await service.contribute_many([contribution(1000), contribution(2000)]))
    first, second = results
    assert first.shares.amounts == {Group.MINOR: 5, Group.MAJOR: 3, Group.MEGA: 2}
    assert second.shares.amounts == {Group.MINOR: 10, Group.MAJOR: 6, Group.MEGA: 4}
    assert first.shares.pools_after == {
        Group.MINOR: 10005,
        Group.MAJOR: 100003,
        Group.MEGA: 1000002,
    }
    assert second.shares.pools_after == {
        Group.MINOR: 10015,
        Group.MAJOR: 100009,
        Group.MEGA: 1000006,
    }
    assert first.contribution_id < second.contribution_id
    assert first.created_at == second.created_at  # one transaction: one now()
    # One CASE update for the batch: every version moved once.
    assert await pool_rows(database_url) == {
        "minor": (10015, 15, 2, 2),
        "major": (100009, 9, 2, 2),
        "mega": (1000006, 6, 2, 2),
    }


async def test_duplicate_keys_inside_one_batch_apply_once(
    service: JackpotService, database_url: str
) -> None:
    key = random_key()
    results = await service.contribute_many(
        [
            contribution(1000, key),
            contribution(5000),
            contribution(1000, key),
            contribution(9999, key),
        ]
    )
    first, other, repeat, reused = results
    assert isinstance(first, ContributionResult) and isinstance(other, ContributionResult)
    assert isinstance(repeat, ContributionResult)
    assert (first.replayed, other.replayed, repeat.replayed) == (False, False, True)
    assert repeat.contribution_id == first.contribution_id
    assert repeat.shares == first.shares
    # The same key with another wager is refused, not answered with the first's result.
    assert isinstance(reused, IdempotencyKeyReused)
    assert await fetch(database_url, "SELECT count(*), sum(wager_amount) FROM contributions") == [
        (2, 6000)
    ]
    assert (await pool_rows(database_url))["minor"][0] == 10000 + 5 + 25


async def test_duplicate_keys_across_batches_replay_the_first(
    service: JackpotService, database_url: str
) -> None:
    key = random_key()
    (first,) = await service.contribute_many([contribution(1000, key)])
    assert isinstance(first, ContributionResult)
    before = await pool_rows(database_url)
    again, fresh = await service.contribute_many([contribution(1000, key), contribution(200)])
    assert isinstance(again, ContributionResult) and isinstance(fresh, ContributionResult)
    assert again.replayed and not first.replayed
    assert (again.contribution_id, again.shares, again.created_at) == (
        first.contribution_id,
        first.shares,
        first.created_at,
    )
    assert fresh.shares.amounts[Group.MINOR] == 1
    after = await pool_rows(database_url)
    assert after["minor"][0] == before["minor"][0] + 1
    # A batch of nothing but replays writes nothing at all, not even a version bump.
    (replay,) = await service.contribute_many([contribution(1000, key)])
    assert isinstance(replay, ContributionResult)
    assert replay.contribution_id == first.contribution_id
    # Nor does a key reused for another wager: it is refused.
    (reused,) = await service.contribute_many([contribution(7, key)])
    assert isinstance(reused, IdempotencyKeyReused)
    assert await pool_rows(database_url) == after
    assert await fetch(database_url, "SELECT count(*) FROM contributions") == [(2,)]


async def test_a_cap_reached_inside_a_batch_limits_the_rest(
    service: JackpotService, database_url: str
) -> None:
    async with await AsyncConnection.connect(database_url) as conn:
        await conn.execute("UPDATE jackpots SET max_amount = 10012 WHERE jackpot_group = 'minor'")
    results = applied(await service.contribute_many([contribution(1000) for _ in range(4)]))
    assert [r.shares.amounts[Group.MINOR] for r in results] == [5, 5, 2, 0]
    assert [r.shares.pools_after[Group.MINOR] for r in results] == [10005, 10010, 10012, 10012]
    assert [r.shares.amounts[Group.MAJOR] for r in results] == [3, 3, 3, 3]  # no cap reached
    assert await fetch(database_url, "SELECT minor_amount FROM contributions ORDER BY id") == [
        (5,),
        (5,),
        (2,),
        (0,),
    ]
    # The pool counts only contributions that reached it.
    assert (await pool_rows(database_url))["minor"] == (10012, 12, 3, 2)
    books = await service.audit()
    assert books.balanced, books.problems()


async def test_a_failing_batch_leaves_no_trace(service: JackpotService, database_url: str) -> None:
    before = await pool_rows(database_url)
    # A wager the validation would refuse breaks the ledger's CHECK inside the transaction.
    with pytest.raises(psycopg.errors.CheckViolation):
        await service.contribute_many([contribution(1000, random_key()), contribution(0)])
    assert await pool_rows(database_url) == before
    assert await fetch(database_url, "SELECT count(*) FROM contributions") == [(0,)]


async def test_a_contribution_past_int64_is_refused_alone_and_the_batch_goes_on(
    service: JackpotService, database_url: str
) -> None:
    """What passes a pool's ceiling is kept (overflow) and counted (contributed), so a
    share the meters cannot hold within int64 is refused, that contribution only
    (OUT_OF_RANGE, nothing written), instead of being clipped or failing the batch."""
    async with await AsyncConnection.connect(database_url) as conn:
        await conn.execute("UPDATE jackpots SET contribution_rate = 0")  # the sum stays <= 1
        await conn.execute("UPDATE jackpots SET contribution_rate = 1 WHERE jackpot_group = 'mega'")
    results = await service.contribute_many(
        [contribution(2**62), contribution(2**62), contribution(1000)]
    )
    first, second, third = results
    assert isinstance(first, ContributionResult) and isinstance(third, ContributionResult)
    assert isinstance(second, OutOfRange)
    assert first.shares.amounts[Group.MEGA] == 2**62
    assert third.shares.pools_after[Group.MEGA] == 1_000_000 + 2**62 + 1000
    assert (await pool_rows(database_url))["mega"][0] == 1_000_000 + 2**62 + 1000
    assert (await service.audit()).balanced


# --- the batcher -------------------------------------------------------------------------


async def test_batcher_coalesces_concurrent_calls_and_answers_each(
    service: JackpotService, database_url: str
) -> None:
    batcher = ContributionBatcher(service, max_batch=8, max_queue=100)
    try:
        results = await queued(batcher, [contribution(1000 * (i + 1)) for i in range(20)])
    finally:
        await batcher.close()
    assert (batcher.batches, batcher.batched) == (3, 20)  # 8 + 8 + 4
    assert [r.shares.amounts[Group.MINOR] for r in results] == [5 * (i + 1) for i in range(20)]
    ids = [r.contribution_id for r in results]
    assert ids == sorted(ids) and len(set(ids)) == 20
    # Arrival order is ledger order: each caller saw the pool right after its own share.
    running = 10000
    for r in results:
        running += r.shares.amounts[Group.MINOR]
        assert r.shares.pools_after[Group.MINOR] == running
    assert await fetch(database_url, "SELECT count(*) FROM contributions") == [(20,)]
    assert (await pool_rows(database_url))["minor"] == (running, running - 10000, 20, 4)


async def test_batch_failure_answers_every_caller_and_leaves_no_trace(
    service: JackpotService, database_url: str
) -> None:
    before = await pool_rows(database_url)
    batcher = ContributionBatcher(service, max_batch=16, max_queue=100)
    commands = [contribution(1000, random_key()) for _ in range(5)] + [contribution(0)]
    try:
        outcomes = await queued(batcher, commands)
    finally:
        await batcher.close()
    assert len(outcomes) == 6
    assert all(isinstance(o, psycopg.errors.CheckViolation) for o in outcomes), outcomes
    assert (batcher.batches, batcher.batched) == (0, 0)
    assert await pool_rows(database_url) == before
    assert await fetch(database_url, "SELECT count(*) FROM contributions") == [(0,)]


async def test_batch_on_a_closed_pool_is_unavailable_for_every_caller(
    pool: Pool, service: JackpotService, database_url: str
) -> None:
    await pool.close()
    batcher = ContributionBatcher(service, max_batch=16, max_queue=100)
    try:
        outcomes = await queued(batcher, [contribution(1000) for _ in range(4)])
    finally:
        await batcher.close()
    assert [type(o) for o in outcomes] == [ShuttingDown] * 4  # UNAVAILABLE, SHUTTING_DOWN
    assert await fetch(database_url, "SELECT count(*) FROM contributions") == [(0,)]


async def test_a_cancelled_caller_is_not_executed(
    service: JackpotService, database_url: str
) -> None:
    batcher = ContributionBatcher(service, max_batch=16, max_queue=100)
    gone = asyncio.create_task(batcher.contribute(contribution(1000)))
    kept = asyncio.create_task(batcher.contribute(contribution(3000)))
    await asyncio.sleep(0)
    gone.cancel()
    batcher.start()
    try:
        result = await kept
        with pytest.raises(asyncio.CancelledError):
            await gone
    finally:
        await batcher.close()
    assert await fetch(database_url, "SELECT wager_amount FROM contributions") == [(3000,)]
    assert result.shares.pools_after[Group.MINOR] == 10015


async def test_full_queue_is_overloaded_and_close_drains_then_refuses(
    service: JackpotService, database_url: str
) -> None:
    batcher = ContributionBatcher(service, max_batch=16, max_queue=2)
    waiting = [asyncio.create_task(batcher.contribute(contribution(1000))) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await batcher.contribute(contribution(1000))
    batcher.start()
    await batcher.close()  # answers everything queued before it returns
    assert all(t.done() and t.exception() is None for t in waiting)
    with pytest.raises(Unavailable, match="shutting down"):
        await batcher.contribute(contribution(1000))
    assert await fetch(database_url, "SELECT count(*) FROM contributions") == [(2,)]


async def test_direct_contributor_limits_calls_in_flight(
    service: JackpotService, database_url: str
) -> None:
    direct = DirectContributor(service, max_in_flight=2)
    async with await AsyncConnection.connect(database_url) as blocker:
        await blocker.execute("SELECT * FROM jackpots FOR UPDATE")  # hold both calls in flight
        held = [asyncio.create_task(direct.contribute(contribution(1000))) for _ in range(2)]
        await asyncio.sleep(0.2)
        with pytest.raises(Overloaded):
            await direct.contribute(contribution(1000))
        await blocker.rollback()
        results = await asyncio.gather(*held)
    assert sorted(r.shares.pools_after[Group.MINOR] for r in results) == [10005, 10010]
    after = await direct.contribute(contribution(1000))  # the slots are free again
    assert after.shares.pools_after[Group.MINOR] == 10015
    for g in GROUPS:
        assert after.shares.amounts[g] > 0


async def test_close_is_bounded_when_the_database_is_stuck(
    service: JackpotService, database_url: str
) -> None:
    """A batch stuck on a lock at shutdown: every caller gets UNAVAILABLE, nothing applies."""
    batcher = ContributionBatcher(service, max_batch=2, max_queue=100)
    async with await AsyncConnection.connect(database_url) as blocker:
        await blocker.execute("SELECT 1 FROM jackpots FOR UPDATE")  # holds every pool row
        batcher.start()
        calls = [asyncio.create_task(batcher.contribute(contribution(1000))) for _ in range(5)]
        await asyncio.sleep(0.2)  # the first batch is now waiting for the lock
        await asyncio.wait_for(batcher.close(budget=0.3), timeout=5)
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        await blocker.rollback()
    assert all(isinstance(o, Unavailable) for o in outcomes), outcomes
    assert len(outcomes) == 5
    assert await fetch(database_url, "SELECT count(*) FROM contributions") == [(0,)]
