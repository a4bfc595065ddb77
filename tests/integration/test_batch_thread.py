"""Group commit on its own thread (ContributionBatcher + BatchConnection) on a real PostgreSQL:
callers are answered only after their batch's COMMIT, a connection that dies mid-batch fails
that batch with UNAVAILABLE, and callers retrying with their keys get exactly one row each."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
import pytest

from jackpot_grpc.adapters import contribution_store as store
from jackpot_grpc.adapters.batch_connection import BatchConnection
from jackpot_grpc.adapters.database import APPLICATION_NAME, create_db_pool
from jackpot_grpc.config import Settings
from jackpot_grpc.domain.errors import ShuttingDown, Unavailable
from jackpot_grpc.domain.model import ContributeCommand, ContributionResult, ScopedKey
from jackpot_grpc.service import batcher as batch_thread
from jackpot_grpc.service.batcher import ContributionBatcher
from jackpot_grpc.service.jackpot import JackpotService
from testkit.outage import database_name


def command(key: str | None, wager: int = 1000) -> ContributeCommand:
    return ContributeCommand(
        game_id=f"game-{key}", wager_amount=wager, idempotency_key=key, client="game-a"
    )


def rows_with_key(database_url: str, key: str) -> int:
    with psycopg.connect(database_url) as conn:
        found = conn.execute(
            "SELECT count(*) FROM contributions WHERE idempotency_key = %s", (key,)
        ).fetchone()
    assert found is not None
    return int(found[0])


def committed_ids(database_url: str, ids: Sequence[int]) -> set[int]:
    """Ledger ids another connection can see (committed ones only)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT id FROM contributions WHERE id = ANY(%s)", (list(ids),))
        return {r[0] for r in rows}


class KillingMidBatch:
    """A BatchExecutor that has the server end its connection between the batch's two
    round trips (after the locks, before the write and COMMIT), once."""

    def __init__(self, inner: BatchConnection, admin_url: str, database: str) -> None:
        self.inner = inner
        self.admin_url = admin_url
        self.database = database
        self.armed = True

    def contribute(self, keys: Sequence[ScopedKey], plan: store.Planner) -> store.Recorded:
        def killing(pools: Any, known: Any) -> store.BatchWrite | None:
            if self.armed:
                self.armed = False
                with psycopg.connect(self.admin_url, autocommit=True) as admin:
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = %s AND application_name = %s",
                        (self.database, APPLICATION_NAME),
                    )
            return plan(pools, known)

        return self.inner.contribute(keys, killing)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
async def service(settings: Settings, database_url: str) -> AsyncIterator[JackpotService]:
    pool = create_db_pool(
        dataclasses.replace(
            settings, database=dataclasses.replace(settings.database, pool_min_size=0)
        ),
        database_url,
    )
    await pool.open()
    yield JackpotService(pool, snapshot_ttl=0)
    await pool.close()


async def test_callers_are_answered_only_after_the_commit(
    settings: Settings, database_url: str, service: JackpotService
) -> None:
    batcher = ContributionBatcher(service, BatchConnection(settings, database_url), 512, 1000)
    batcher.start()
    seen_at_answer: list[bool] = []

    def check(answer: asyncio.Future[ContributionResult]) -> None:
        result = answer.result()  # on the loop, the moment the caller is answered
        seen_at_answer.append(
            result.contribution_id in committed_ids(database_url, [result.contribution_id])
        )

    async def call(i: int) -> ContributionResult:
        task = asyncio.ensure_future(batcher.contribute(command(f"after-commit-{i}")))
        task.add_done_callback(check)
        return await task

    try:
        results = await asyncio.gather(*(call(i) for i in range(40)))
    finally:
        await batcher.close()
    assert len({r.contribution_id for r in results}) == 40
    assert seen_at_answer == [True] * 40
    assert batcher.batches >= 1 and batcher.batched == 40
    # The snapshot followed the commit (on the loop): every pool moved by all 40.
    assert {p.contribution_count for p in service.snapshot.latest()} == {40}


async def test_a_connection_lost_mid_batch_fails_it_and_retries_apply_exactly_once(
    settings: Settings, database_url: str, admin_url: str, service: JackpotService
) -> None:
    executor = KillingMidBatch(
        BatchConnection(settings, database_url), admin_url, database_name(database_url)
    )
    batcher = ContributionBatcher(service, executor, 512, 1000)
    batcher.start()
    keys = [f"lost-{i}" for i in range(8)]
    try:
        first = await asyncio.gather(
            *(batcher.contribute(command(k)) for k in keys), return_exceptions=True
        )
        failed = [k for k, r in zip(keys, first, strict=True) if isinstance(r, Unavailable)]
        assert failed, first  # the batch that lost its connection was refused, not answered
        assert all(isinstance(r, (Unavailable, ContributionResult)) for r in first)
        # Retried with the same keys (as clients do on UNAVAILABLE): a new connection.
        again = await asyncio.gather(*(batcher.contribute(command(k)) for k in keys))
    finally:
        await batcher.close()
    assert all(isinstance(r, ContributionResult) for r in again)
    assert [rows_with_key(database_url, k) for k in keys] == [1] * len(keys)


async def test_a_connection_closed_between_batches_is_replaced_before_use(
    settings: Settings, database_url: str, admin_url: str, service: JackpotService
) -> None:
    batcher = ContributionBatcher(service, BatchConnection(settings, database_url), 512, 1000)
    batcher.start()
    try:
        await batcher.contribute(command("before"))
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND application_name = %s",
                (database_name(database_url), APPLICATION_NAME),
            )
        await asyncio.sleep(0.2)  # the server's goodbye reaches the socket
        after = await batcher.contribute(command("after"))  # no UNAVAILABLE: checked first
    finally:
        await batcher.close()
    assert after.contribution_id > 0


async def test_closing_answers_what_was_queued_and_refuses_the_rest(
    settings: Settings, database_url: str, service: JackpotService
) -> None:
    batcher = ContributionBatcher(service, BatchConnection(settings, database_url), 4, 1000)
    batcher.start()
    calls = [asyncio.ensure_future(batcher.contribute(command(f"c-{i}"))) for i in range(20)]
    await asyncio.sleep(0)  # every call queued
    await batcher.close()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, ContributionResult) for r in results), results
    with pytest.raises(ShuttingDown):
        await batcher.contribute(command("late"))
    assert [rows_with_key(database_url, f"c-{i}") for i in range(20)] == [1] * 20


class CountedSleeps:
    """The batch thread's `time` module, with each sleep (a linger step) recorded."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        time.sleep(seconds)


async def test_a_lone_caller_is_not_delayed_by_the_linger(
    settings: Settings,
    database_url: str,
    service: JackpotService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = CountedSleeps()
    monkeypatch.setattr(batch_thread, "time", clock)
    batcher = ContributionBatcher(
        service, BatchConnection(settings, database_url), 512, 1000, linger=5.0
    )
    batcher.start()
    try:
        await batcher.contribute(command("warm"))  # the connection is open
        await batcher.contribute(command("alone"))
        alone = list(clock.sleeps)
        # Several queued together: the batch waits a step (5/8 s) for more, and stops at
        # the first step that brings none, well before the 5 s linger.
        await asyncio.gather(*(batcher.contribute(command(f"together-{i}")) for i in range(4)))
        together = clock.sleeps[len(alone) :]
    finally:
        await batcher.close()
    assert alone == [], alone  # counted, not timed: no linger step for a lone caller
    step = 5.0 / batch_thread.LINGER_STEPS
    assert together and set(together) == {step}, together
    assert len(together) < batch_thread.LINGER_STEPS, together
    assert [rows_with_key(database_url, f"together-{i}") for i in range(4)] == [1] * 4
