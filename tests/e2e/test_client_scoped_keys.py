"""Idempotency keys are scoped per client, and every ledger row names its client: two game
backends on one real server (clients file, bearer tokens, real gRPC, real PostgreSQL).

The same key from two clients is two independent requests; from one client it keeps the
rules of one key (the same request replays, another is IDEMPOTENCY_KEY_REUSED), in single
calls, within one ContributeBatch and through the group commit, which batches calls from
many clients into one transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.adapters import clients_file
from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from jackpot_grpc.service.batcher import ContributionBatcher
from testkit.calls import error_reason
from testkit.identity import Metadata, bearer
from testkit.random_refs import random_key

Stub = jackpot_pb2_grpc.JackpotServiceStub
A, B = "slots-a", "slots-b"
T = TypeVar("T")


@dataclasses.dataclass
class Games:
    server: RunningServer
    stub: Stub
    auth: dict[str, Metadata]  # by client name

    def contribute(self, client: str, wager: int, key: str) -> Awaitable[pb.ContributeResponse]:
        request = pb.ContributeRequest(game_id="slots", wager_amount=wager, idempotency_key=key)
        reply: Awaitable[pb.ContributeResponse] = self.stub.Contribute(
            request, metadata=self.auth[client], timeout=10
        )
        return reply


@pytest.fixture
async def games(settings: Settings, database_url: str, tmp_path: Path) -> AsyncIterator[Games]:
    path = tmp_path / "clients.json"
    auth = {}
    for name in (A, B):
        token = clients_file.add_client(path, name, "game")
        assert token is not None
        auth[name] = bearer(token)
    running = await start_server(
        dataclasses.replace(settings, auth=dataclasses.replace(settings.auth, clients_file=path)),
        database_url,
        port=0,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Games(running, Stub(channel), auth)
    finally:
        await running.stop(grace=1.0)


def rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def contributions_with(url: str, key: str) -> list[tuple[Any, ...]]:
    return rows(
        url,
        "SELECT id, client, wager_amount FROM contributions WHERE idempotency_key = %s ORDER BY id",
        key,
    )


async def refused(call: Awaitable[T]) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    return error_reason(exc.value)


async def test_one_contribute_key_from_two_clients_is_two_requests(
    games: Games, database_url: str
) -> None:
    key = random_key()
    first_a = await games.contribute(A, 1000, key)
    first_b = await games.contribute(B, 2500, key)  # another client's request, same key
    assert not first_a.replayed and not first_b.replayed
    assert contributions_with(database_url, key) == [
        (first_a.contribution_id, A, 1000),
        (first_b.contribution_id, B, 2500),
    ]

    again_a, again_b = await games.contribute(A, 1000, key), await games.contribute(B, 2500, key)
    assert (again_a.replayed, again_a.contribution_id) == (True, first_a.contribution_id)
    assert (again_b.replayed, again_b.contribution_id) == (True, first_b.contribution_id)
    # Each client's key stays bound to its own request: B's request is not A's.
    assert await refused(games.contribute(A, 2500, key)) == "IDEMPOTENCY_KEY_REUSED"
    assert await refused(games.contribute(B, 1000, key)) == "IDEMPOTENCY_KEY_REUSED"
    assert len(contributions_with(database_url, key)) == 2


async def test_one_win_key_from_two_clients_pays_twice_each_row_naming_its_client(
    games: Games, database_url: str
) -> None:
    key = random_key()
    users = {A: str(uuid.uuid4()), B: str(uuid.uuid4())}

    def win(client: str, user: str) -> Awaitable[pb.WinResponse]:
        request = pb.WinRequest(
            group=pb.JACKPOT_GROUP_MAJOR,
            game_id="slots",
            user_id=user,
            win_amount=7,
            idempotency_key=key,
        )
        reply: Awaitable[pb.WinResponse] = games.stub.Win(
            request, metadata=games.auth[client], timeout=10
        )
        return reply

    paid = {client: await win(client, users[client]) for client in (A, B)}
    assert not paid[A].replayed and not paid[B].replayed
    assert paid[A].win_id != paid[B].win_id
    assert rows(
        database_url,
        "SELECT id, client, user_id::text FROM wins WHERE idempotency_key = %s ORDER BY id",
        key,
    ) == [(paid[A].win_id, A, users[A]), (paid[B].win_id, B, users[B])]

    replay = await win(A, users[A])
    assert (replay.replayed, replay.win_id) == (True, paid[A].win_id)
    assert await refused(win(B, users[A])) == "IDEMPOTENCY_KEY_REUSED"
    (count,) = rows(database_url, "SELECT count(*) FROM wins WHERE idempotency_key = %s", key)
    assert count == (2,)


async def test_contribute_batch_scopes_its_keys_to_its_client(
    games: Games, database_url: str
) -> None:
    key, other = random_key(), random_key()

    def batch(client: str, *items: tuple[int, str]) -> Awaitable[pb.ContributeBatchResponse]:
        request = pb.ContributeBatchRequest(
            contributions=[
                pb.ContributeRequest(game_id="slots", wager_amount=wager, idempotency_key=k)
                for wager, k in items
            ]
        )
        reply: Awaitable[pb.ContributeBatchResponse] = games.stub.ContributeBatch(
            request, metadata=games.auth[client], timeout=10
        )
        return reply

    from_a = await batch(A, (1000, key))
    assert (from_a.applied_count, from_a.replayed_count, from_a.rejected_count) == (1, 0, 0)
    # B's key is its own: applied, then replayed and refused within B's batch, by B's rules.
    from_b = await batch(B, (2000, key), (2000, key), (3000, key), (100, other))
    assert (from_b.applied_count, from_b.replayed_count, from_b.rejected_count) == (2, 1, 1)
    first, repeat, reused, _ = from_b.results
    assert repeat.result.contribution_id == first.result.contribution_id
    assert repeat.result.replayed
    assert (reused.error.code, reused.error.reason) == (9, "IDEMPOTENCY_KEY_REUSED")
    # A's batch sees A's binding, not B's.
    again_a = await batch(A, (1000, key), (2000, key))
    assert (again_a.applied_count, again_a.replayed_count, again_a.rejected_count) == (0, 1, 1)
    assert again_a.results[0].result.contribution_id == from_a.results[0].result.contribution_id

    assert contributions_with(database_url, key) == [
        (from_a.results[0].result.contribution_id, A, 1000),
        (first.result.contribution_id, B, 2000),
    ]
    assert rows(
        database_url, "SELECT client FROM contributions WHERE idempotency_key = %s", other
    ) == [(B,)]


async def eventually(check: Callable[[], bool], what: str) -> None:
    for _ in range(500):  # 10 s
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"waited too long for {what}")


def lock_waiters(watcher: psycopg.Connection[Any]) -> int:
    (row,) = watcher.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchall()
    return int(row[0])


async def test_the_group_commit_keeps_each_calls_client_and_key_scope(
    games: Games, database_url: str
) -> None:
    """Single Contribute calls from two clients, sharing a key, committed in one batch:
    one row per client, each with its client; each client's repeats replay its own row."""
    batcher = games.server.contributor
    assert isinstance(batcher, ContributionBatcher)
    key = random_key()
    racing = [(A, 1000), (B, 2000)] * 3
    with (
        psycopg.connect(database_url) as holder,
        psycopg.connect(database_url, autocommit=True) as watcher,
    ):
        # Hold the pool locks: a first batch waits on them while the racing calls queue.
        holder.execute("SELECT 1 FROM jackpots FOR UPDATE")
        blocked = asyncio.ensure_future(games.contribute(A, 10, random_key()))
        await eventually(lambda: lock_waiters(watcher) == 1, "the first batch to wait")
        answers = [asyncio.ensure_future(games.contribute(c, w, key)) for c, w in racing]
        await eventually(lambda: batcher.waiting == len(racing), "the racing calls to queue")
        holder.rollback()
    await blocked
    results = await asyncio.gather(*answers)
    assert batcher.batches == 2  # the blocked call's, then every racing call in one

    written = contributions_with(database_url, key)
    assert [(client, wager) for _, client, wager in written] == [(A, 1000), (B, 2000)]
    ids = {client: row_id for row_id, client, _ in written}
    for (client, _), answer in zip(racing, results, strict=True):
        assert answer.contribution_id == ids[client]
    assert sorted(a.replayed for a in results) == [False, False, True, True, True, True]
