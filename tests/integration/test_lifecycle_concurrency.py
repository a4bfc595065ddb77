"""Pool lifecycle under concurrent writers on a real PostgreSQL: a suspend racing
contributions, and a change scheduled for the next win racing wins and contributions. Each
ends with a clean audit (every share re-proved against the rate in force at its place in
the ledger, 0 while suspended). Bounded in calls and time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.adapters.batch_connection import BatchConnection
from jackpot_grpc.config import Settings
from jackpot_grpc.domain.errors import PoolSuspended
from jackpot_grpc.domain.model import ConfigChange, ContributeCommand, Group, WinCommand
from jackpot_grpc.service.batcher import ContributionBatcher
from jackpot_grpc.service.jackpot import JackpotService
from testkit.ledger import cli_audit
from testkit.random_refs import random_game_id, random_user_id

Pool = AsyncConnectionPool[AsyncConnection[Any]]

CONTRIBUTORS = 16
CALLS_EACH = 30
STRESS_SECONDS = 3.0
PACE_SECONDS = 0.01
NO_DEADLOCK_SECONDS = 30


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[JackpotService]:
    pool: Pool = AsyncConnectionPool(database_url, min_size=4, max_size=4, timeout=20, open=False)
    await pool.open(wait=True, timeout=10)
    yield JackpotService(pool, snapshot_ttl=0)
    await pool.close()


async def fetch(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    async with await AsyncConnection.connect(database_url) as conn:
        return await (await conn.execute(sql)).fetchall()


async def contributors(batcher: ContributionBatcher, deadline: float) -> int:
    done = 0

    async def one(n: int) -> None:
        nonlocal done
        for i in range(CALLS_EACH):
            if time.monotonic() > deadline:
                return
            command = ContributeCommand(random_game_id(), 100_000 + 37 * n + i, None, "game-a")
            await batcher.contribute(command)
            done += 1
            # Paced so the calls span several of the toggler's turns (0.1 s apart): unpaced,
            # all 480 could land within the first suspension, and the race not interleave.
            await asyncio.sleep(PACE_SECONDS)

    await asyncio.gather(*(one(n) for n in range(CONTRIBUTORS)))
    return done


async def test_a_suspend_racing_contributions_ends_with_a_clean_audit(
    service: JackpotService, database_url: str, settings: Settings
) -> None:
    batcher = ContributionBatcher(
        service, BatchConnection(settings, database_url), max_batch=32, max_queue=1024
    )
    batcher.start()
    deadline = time.monotonic() + STRESS_SECONDS
    refused = 0

    async def toggler() -> None:
        nonlocal refused
        for n in range(6):
            await service.set_suspended(Group.MINOR, n % 2 == 0, "ops", "race", "admin")
            try:  # a win between: refused exactly while suspended
                await service.win(
                    WinCommand(Group.MINOR, random_game_id(), random_user_id(), 1, None, "g")
                )
            except PoolSuspended:
                refused += 1
            await asyncio.sleep(0.1)

    try:
        done, _ = await asyncio.wait_for(
            asyncio.gather(contributors(batcher, deadline), toggler()), NO_DEADLOCK_SECONDS
        )
    finally:
        await batcher.close()
    assert done >= CONTRIBUTORS and refused == 3
    books = await service.audit()
    assert books.balanced, books.problems()
    code, report = await asyncio.to_thread(cli_audit, database_url)  # `jackpot audit --json`
    assert code == 0 and report["balanced"] is True, report
    rates = dict(
        await fetch(
            database_url,
            "SELECT minor_rate = 0, count(*) FROM contributions GROUP BY minor_rate = 0",
        )
    )
    assert rates[True] > 0 and rates[False] > 0  # the race did interleave
    # No suspended contribution took a minor share; the other pools took theirs throughout.
    assert await fetch(
        database_url,
        "SELECT count(*) FROM contributions WHERE minor_rate = 0"
        " AND (minor_amount <> 0 OR major_amount = 0)",
    ) == [(0,)]
    lifecycle = await fetch(database_url, "SELECT action FROM pool_lifecycle ORDER BY ledger_seq")
    assert [a for (a,) in lifecycle] == ["suspend", "resume"] * 3


async def test_a_change_scheduled_racing_wins_applies_at_a_win_with_a_clean_audit(
    service: JackpotService, database_url: str, settings: Settings
) -> None:
    batcher = ContributionBatcher(
        service, BatchConnection(settings, database_url), max_batch=32, max_queue=1024
    )
    batcher.start()
    deadline = time.monotonic() + STRESS_SECONDS
    scheduled = 0

    async def scheduler() -> None:
        nonlocal scheduled
        for n in range(8):
            rate = Decimal("0.006") if n % 2 else Decimal("0.004")
            change = ConfigChange(
                Group.MINOR, rate, 10_000 + n, None, False, None, "ops", f"cycle {n}", True
            )
            await service.update_config(change, "admin")
            scheduled += 1
            await asyncio.sleep(0.05)

    async def winner() -> None:
        for _ in range(8):
            await service.win(
                WinCommand(Group.MINOR, random_game_id(), random_user_id(), None, None, "g")
            )
            await asyncio.sleep(0.07)

    try:
        await asyncio.wait_for(
            asyncio.gather(contributors(batcher, deadline), scheduler(), winner()),
            NO_DEADLOCK_SECONDS,
        )
    finally:
        await batcher.close()
    assert scheduled == 8
    books = await service.audit()
    assert books.balanced, books.problems()
    code, report = await asyncio.to_thread(cli_audit, database_url)  # `jackpot audit --json`
    assert code == 0 and report["balanced"] is True, report
    applied = await fetch(
        database_url,
        "SELECT ledger_seq FROM config_audit WHERE reason LIKE 'applied at the next win%'",
    )
    assert 1 <= len(applied) <= 8
    # Each applied change is the row just before a minor win in the ledger's order: the win's
    # own transaction (every writer holds the pool locks while drawing the sequence).
    following = await fetch(
        database_url,
        """SELECT (SELECT tbl FROM (
                    SELECT 'contributions' AS tbl, ledger_seq FROM contributions
                    UNION ALL SELECT 'wins:' || jackpot_group, ledger_seq FROM wins
                    UNION ALL SELECT 'seed_fundings', ledger_seq FROM seed_fundings
                    UNION ALL SELECT 'config_audit', ledger_seq FROM config_audit
                    UNION ALL SELECT 'pool_lifecycle', ledger_seq FROM pool_lifecycle) rows
                  WHERE rows.ledger_seq > a.ledger_seq ORDER BY rows.ledger_seq LIMIT 1)
           FROM config_audit a WHERE a.reason LIKE 'applied at the next win%'""",
    )
    assert {t for (t,) in following} == {"wins:minor"}
    # The pool ends on the last applied change, with nothing left pending only if the last
    # schedule was applied.
    ((rate, seed, pending),) = await fetch(
        database_url,
        "SELECT contribution_rate, seed_amount, pending_config IS NOT NULL FROM jackpots"
        " WHERE jackpot_group = 'minor'",
    )
    ((last_rate, last_seed),) = await fetch(
        database_url,
        "SELECT (after->>'contribution_rate')::numeric, (after->>'seed_amount')::bigint"
        " FROM config_audit ORDER BY ledger_seq DESC LIMIT 1",
    )
    assert (rate, seed) == (last_rate, last_seed)
    assert isinstance(pending, bool)
