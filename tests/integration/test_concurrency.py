"""Many writers at once on a real PostgreSQL: no deadlock, no lost update, nothing paid twice.

Every stress test here is bounded in calls and in time (the machine has two cores).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.domain.errors import VersionConflict
from jackpot_grpc.domain.model import (
    GROUPS,
    ConfigChange,
    ContributeCommand,
    ContributionResult,
    Group,
    WinCommand,
    WinResult,
)
from jackpot_grpc.service.batcher import ContributionBatcher
from jackpot_grpc.service.jackpot import JackpotService
from testkit.contributions import applied
from testkit.random_refs import random_game_id, random_key, random_user_id

Pool = AsyncConnectionPool[AsyncConnection[Any]]

CONTRIBUTORS = 32
CALLS_EACH = 25
STRESS_SECONDS = 2.5
NO_DEADLOCK_SECONDS = 30


@pytest.fixture
async def make_pool(database_url: str) -> AsyncIterator[Callable[[int], Awaitable[Pool]]]:
    opened: list[Pool] = []

    async def make(size: int) -> Pool:
        pool: Pool = AsyncConnectionPool(
            database_url, min_size=size, max_size=size, timeout=20, open=False
        )
        await pool.open(wait=True, timeout=10)
        opened.append(pool)
        return pool

    yield make
    for pool in opened:
        await pool.close()


async def fetch(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    async with await AsyncConnection.connect(database_url) as conn:
        return await (await conn.execute(sql, params)).fetchall()


async def assert_books_balance(service: JackpotService, database_url: str) -> None:
    """Pools' totals equal the ledger sums, and the audit agrees."""
    books = await service.audit()
    assert [a.discrepancy for a in books.pools] == [0, 0, 0]
    assert books.balanced, books.problems()
    ((minor, major, mega),) = await fetch(
        database_url,
        "SELECT coalesce(sum(minor_amount), 0), coalesce(sum(major_amount), 0),"
        " coalesce(sum(mega_amount), 0) FROM contributions",
    )
    totals = dict(
        await fetch(database_url, "SELECT jackpot_group, total_contributions FROM jackpots")
    )
    assert totals == {"minor": minor, "major": major, "mega": mega}


def contribution(wager: int, key: str | None = None) -> ContributeCommand:
    # A key is bound to its request: the same key and wager must be the same game too.
    game = random_game_id() if key is None else f"game-{key}"
    return ContributeCommand(game_id=game, wager_amount=wager, idempotency_key=key, client="game-a")


async def run_contributors(
    contribute: Callable[[ContributeCommand], Awaitable[ContributionResult]],
) -> list[tuple[int, ContributionResult]]:
    """32 contributors, each CALLS_EACH calls or until STRESS_SECONDS pass."""
    deadline = time.monotonic() + STRESS_SECONDS
    done: list[tuple[int, ContributionResult]] = []

    async def contributor(n: int) -> None:
        for i in range(CALLS_EACH):
            if time.monotonic() > deadline:
                return
            wager = 1000 + 37 * n + i  # varied, so the shares vary
            done.append((wager, await contribute(contribution(wager))))

    await asyncio.wait_for(
        asyncio.gather(*(contributor(n) for n in range(CONTRIBUTORS))), NO_DEADLOCK_SECONDS
    )
    return done


async def assert_every_contribution_landed(
    done: list[tuple[int, ContributionResult]], database_url: str
) -> None:
    assert len(done) >= CONTRIBUTORS  # every contributor got at least one call through
    ids = [r.contribution_id for _, r in done]
    assert len(set(ids)) == len(ids)
    rows = await fetch(
        database_url,
        "SELECT id, wager_amount, minor_amount, major_amount, mega_amount FROM contributions",
    )
    assert sorted(rows) == sorted(
        (r.contribution_id, w, *(r.shares.amounts[g] for g in GROUPS)) for w, r in done
    )
    # No lost update: each pool moved by exactly what the callers were told.
    pools = dict(await fetch(database_url, "SELECT jackpot_group, current_amount FROM jackpots"))
    start = {"minor": 10000, "major": 100000, "mega": 1000000}
    for g in GROUPS:
        assert pools[g.value] == start[g.value] + sum(r.shares.amounts[g] for _, r in done)


async def test_32_direct_contributors_over_two_processes_worth_of_pools(
    make_pool: Callable[[int], Awaitable[Pool]], database_url: str
) -> None:
    """Two services on two connection pools, as two server processes would be."""
    services = [JackpotService(await make_pool(6), snapshot_ttl=0) for _ in range(2)]
    counter = iter(range(10**9))

    async def contribute(command: ContributeCommand) -> ContributionResult:
        service = services[next(counter) % 2]
        (result,) = applied(await service.contribute_many([command]))
        return result

    done = await run_contributors(contribute)
    await assert_every_contribution_landed(done, database_url)
    await assert_books_balance(services[0], database_url)


async def test_32_contributors_through_the_batcher_with_wins_racing(
    make_pool: Callable[[int], Awaitable[Pool]], database_url: str
) -> None:
    service = JackpotService(await make_pool(4), snapshot_ttl=0)
    batcher = ContributionBatcher(service, max_batch=64, max_queue=1024)
    batcher.start()
    wins: list[WinResult] = []

    async def winner() -> None:  # takes small wins from minor while contributions pour in
        for _ in range(10):
            command = WinCommand(Group.MINOR, random_game_id(), random_user_id(), 3, None, "game-a")
            wins.append(await service.win(command))
            await asyncio.sleep(0.05)

    try:
        done, _ = await asyncio.gather(run_contributors(batcher.contribute), winner())
    finally:
        await batcher.close()
    assert batcher.batched == len(done)
    assert batcher.batches < len(done)  # concurrent calls shared transactions
    assert len(wins) == 10
    ((won,),) = await fetch(database_url, "SELECT sum(amount) FROM wins")
    assert won == 30
    await assert_books_balance(service, database_url)
    # Contributions and wins interleave, so check the ledger rows rather than the pools.
    rows = await fetch(database_url, "SELECT id, wager_amount FROM contributions")
    assert sorted(rows) == sorted((r.contribution_id, w) for w, r in done)


async def test_racing_whole_pool_wins_pay_the_pool_once_then_the_seed(
    make_pool: Callable[[int], Awaitable[Pool]], database_url: str
) -> None:
    pool = await make_pool(10)
    services = [JackpotService(pool, snapshot_ttl=0) for _ in range(10)]
    await services[0].contribute_many([contribution(1_000_000)])  # minor: 10000 + 5000
    commands = [
        WinCommand(Group.MINOR, random_game_id(), random_user_id(), None, None, "game-a")
    ] * 10

    results = await asyncio.wait_for(
        asyncio.gather(*(s.win(c) for s, c in zip(services, commands, strict=True))),
        NO_DEADLOCK_SECONDS,
    )

    paid = sorted((r.outcome.amount for r in results), reverse=True)
    assert paid == [15000] + [10000] * 9
    assert sorted(r.outcome.seed_top_up for r in results) == [10000] * 10
    assert all(r.outcome.pool_after == 10000 for r in results)
    assert len({r.win_id for r in results}) == 10
    rows = await fetch(
        database_url,
        "SELECT amount, pool_before FROM wins WHERE jackpot_group = 'minor' ORDER BY id",
    )
    assert rows == [(15000, 15000)] + [(10000, 10000)] * 9
    ((current, total_wins, funded),) = await fetch(
        database_url,
        "SELECT current_amount, total_wins, total_seed_funding FROM jackpots"
        " WHERE jackpot_group = 'minor'",
    )
    assert (current, total_wins, funded) == (10000, 105000, 110000)
    await assert_books_balance(services[0], database_url)


async def test_one_key_raced_by_20_services_contributes_once(
    make_pool: Callable[[int], Awaitable[Pool]], database_url: str
) -> None:
    pool = await make_pool(20)
    services = [JackpotService(pool, snapshot_ttl=0) for _ in range(20)]
    key = random_key()
    results = await asyncio.gather(
        *(s.contribute_many([contribution(2000, key)]) for s in services)
    )
    flat = applied([r for (r,) in results])
    assert {r.contribution_id for r in flat} == {flat[0].contribution_id}
    assert sorted(r.replayed for r in flat) == [False] + [True] * 19
    assert all(r.shares == flat[0].shares for r in flat)
    assert await fetch(database_url, "SELECT count(*), sum(minor_amount) FROM contributions") == [
        (1, 10)
    ]
    assert await fetch(
        database_url, "SELECT current_amount FROM jackpots WHERE jackpot_group = 'minor'"
    ) == [(10010,)]
    await assert_books_balance(services[0], database_url)


@pytest.mark.parametrize("max_batch", [3, 64])
async def test_one_key_raced_through_the_batcher_contributes_once(
    make_pool: Callable[[int], Awaitable[Pool]], database_url: str, max_batch: int
) -> None:
    """max_batch 3: the copies span several batches; 64: they share one."""
    service = JackpotService(await make_pool(2), snapshot_ttl=0)
    batcher = ContributionBatcher(service, max_batch=max_batch, max_queue=100)
    batcher.start()
    key = random_key()
    try:
        flat = await asyncio.gather(
            *(batcher.contribute(contribution(2000, key)) for _ in range(20))
        )
    finally:
        await batcher.close()
    assert {r.contribution_id for r in flat} == {flat[0].contribution_id}
    assert sorted(r.replayed for r in flat) == [False] + [True] * 19
    assert not flat[0].replayed  # the first caller in arrival order is the one applied
    assert await fetch(database_url, "SELECT count(*) FROM contributions") == [(1,)]
    await assert_books_balance(service, database_url)


async def test_one_win_key_raced_by_20_services_pays_once(
    make_pool: Callable[[int], Awaitable[Pool]], database_url: str
) -> None:
    pool = await make_pool(20)
    services = [JackpotService(pool, snapshot_ttl=0) for _ in range(20)]
    command = WinCommand(
        Group.MAJOR, random_game_id(), random_user_id(), None, random_key(), "game-a"
    )
    results = await asyncio.gather(*(s.win(command) for s in services))
    assert {r.win_id for r in results} == {results[0].win_id}
    assert sorted(r.replayed for r in results) == [False] + [True] * 19
    assert all(r.outcome.amount == 100000 for r in results)
    assert await fetch(database_url, "SELECT count(*), sum(amount) FROM wins") == [(1, 100000)]
    assert await fetch(
        database_url, "SELECT total_wins, win_count FROM jackpots WHERE jackpot_group = 'major'"
    ) == [(100000, 1)]
    await assert_books_balance(services[0], database_url)


async def test_two_concurrent_config_updates_with_one_version_have_one_loser(
    make_pool: Callable[[int], Awaitable[Pool]], database_url: str
) -> None:
    """cosmicpython's two-thread test: both read version 1, exactly one may write."""
    pool = await make_pool(3)
    first, second = JackpotService(pool), JackpotService(pool)
    (minor, *_) = await first.config()
    assert minor.version == 1

    def change(rate: str) -> ConfigChange:
        return ConfigChange(
            Group.MINOR, Decimal(rate), None, None, False, minor.version, "tester", "race"
        )

    async with await AsyncConnection.connect(database_url) as blocker:
        # Hold the pools so both updates are in flight, queued on the lock, at once.
        await blocker.execute("SELECT * FROM jackpots FOR UPDATE")
        tasks = [
            asyncio.create_task(first.update_config(change("0.006"), "tester")),
            asyncio.create_task(second.update_config(change("0.007"), "tester")),
        ]
        for _ in range(100):
            waiting = await fetch(
                database_url,
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            if waiting == [(2,)]:
                break
            await asyncio.sleep(0.05)
        assert waiting == [(2,)]
        await blocker.rollback()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    losers = [o for o in outcomes if isinstance(o, VersionConflict)]
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    assert (len(winners), len(losers)) == (1, 1)
    assert "at version 2, not 1" in losers[0].message
    config, _ = winners[0]
    assert config.version == 2
    rows = await fetch(database_url, "SELECT after->>'contribution_rate' FROM config_audit")
    assert [Decimal(r) for (r,) in rows] == [config.contribution_rate]
    ((rate, version),) = await fetch(
        database_url,
        "SELECT contribution_rate, version FROM jackpots WHERE jackpot_group = 'minor'",
    )
    assert (rate, version) == (config.contribution_rate, 2)


async def test_leaf_indexes_are_gap_free_in_commit_order_across_services(
    make_pool: Callable[[int], Awaitable[Pool]], database_url: str
) -> None:
    """Two services on two pools (as two server processes) write every kind of ledger row
    at once — single and batched contributions, wins with top-ups, config changes, a pool
    suspended and resumed, changes scheduled for minor's next win (applied by the winners)
    — with dry runs rolled back among them: every row's leaf index (its receipt) is the one its
    caller was told, the indexes are 0..n-1 without a gap, and their order is the commit
    order (ledger_seq, drawn under the same locks)."""
    services = [JackpotService(await make_pool(4), snapshot_ttl=0) for _ in range(2)]
    told: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + STRESS_SECONDS

    async def contributor(n: int) -> None:
        service = services[n % 2]
        while time.monotonic() < deadline:
            batch = [contribution(500 + n + i) for i in range(1 + n % 3)]
            dry = n % 4 == 3
            for result in await service.contribute_many(batch, validate_only=dry):
                assert isinstance(result, ContributionResult)
                if dry:
                    assert result.leaf_index == 0
                else:
                    told["contributions", result.contribution_id] = result.leaf_index

    async def winner(n: int) -> None:
        service = services[n % 2]
        while time.monotonic() < deadline:
            command = WinCommand(Group.MINOR, random_game_id(), random_user_id(), None, None, "g")
            result = await service.win(command, validate_only=n == 1)
            if n != 1:
                told["wins", result.win_id] = result.leaf_index
            await asyncio.sleep(0.02)

    async def configurer() -> None:
        rates = iter([Decimal("0.006"), Decimal("0.005")] * 100)
        while time.monotonic() < deadline:
            change = ConfigChange(Group.MINOR, next(rates), None, None, False, None, "t", "r")
            await services[1].update_config(change, client="ops")
            await asyncio.sleep(0.05)

    async def lifecycler() -> None:
        seeds = iter([10_500, 10_000] * 100)
        while time.monotonic() < deadline:
            for suspended in (True, False):
                await services[0].set_suspended(Group.MEGA, suspended, "t", "r", "ops")
            change = ConfigChange(
                Group.MINOR, None, next(seeds), None, False, None, "t", "r", apply_at_next_win=True
            )
            await services[0].update_config(change, client="ops")
            await asyncio.sleep(0.05)

    await asyncio.wait_for(
        asyncio.gather(
            *(contributor(n) for n in range(12)),
            winner(0),
            winner(1),
            winner(2),
            configurer(),
            lifecycler(),
        ),
        NO_DEADLOCK_SECONDS,
    )
    rows = await fetch(
        database_url,
        "SELECT t, id, leaf_index, ledger_seq FROM ("
        " SELECT 'contributions' AS t, id, leaf_index, ledger_seq FROM contributions"
        " UNION ALL SELECT 'wins', id, leaf_index, ledger_seq FROM wins"
        " UNION ALL SELECT 'seed_fundings', id, leaf_index, ledger_seq FROM seed_fundings"
        " UNION ALL SELECT 'config_audit', id, leaf_index, ledger_seq FROM config_audit"
        " UNION ALL SELECT 'pool_lifecycle', id, leaf_index, ledger_seq FROM pool_lifecycle) r"
        " WHERE leaf_index IS NOT NULL ORDER BY leaf_index",
    )
    ((head, receipts_from),) = await fetch(
        database_url, "SELECT size, receipts_from FROM ledger_head"
    )
    indexes = [index for _, _, index, _ in rows]
    assert indexes == list(range(receipts_from, head))  # gap-free up to the head
    assert [seq for *_, seq in rows] == sorted(seq for *_, seq in rows)  # commit order
    recorded = {(t, row_id): index for t, row_id, index, _ in rows}
    assert {key: recorded[key] for key in told} == told and len(told) > 50
    assert {t for t, *_ in rows} == {
        "contributions",
        "wins",
        "seed_fundings",
        "config_audit",
        "pool_lifecycle",
    }
    # A change applied at a win is the leaf just before the win's.
    applied = await fetch(
        database_url,
        "SELECT a.leaf_index, (SELECT min(w.leaf_index) FROM wins w"
        " WHERE w.leaf_index > a.leaf_index) FROM config_audit a"
        " WHERE a.reason LIKE 'applied at the next win%%'",
    )
    assert applied and all(win == change + 1 for change, win in applied)
    await assert_books_balance(services[0], database_url)
