"""WatchPools over a real server and real channels: the first message carries the pools,
every win reaches every watcher once and in order, sequence numbers never skip."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from testkit.processes import serving
from testkit.random_refs import random_game_id, random_key, random_user_id

GROUPS = (pb.JACKPOT_GROUP_MINOR, pb.JACKPOT_GROUP_MAJOR, pb.JACKPOT_GROUP_MEGA)
WAIT = 10.0  # far beyond the 100 ms a message takes; only a hang reaches it


def win_request(group: int, amount: int) -> pb.WinRequest:
    return pb.WinRequest(
        group=group,  # type: ignore[arg-type]
        game_id=random_game_id("watch"),
        user_id=str(random_user_id()),
        win_amount=amount,
        idempotency_key=random_key("watch"),
    )


async def read_until_hits(
    call: grpc.aio.UnaryStreamCall[pb.WatchPoolsRequest, pb.WatchPoolsResponse],
    hits: int,
) -> list[pb.WatchPoolsResponse]:
    """Messages until `hits` hits arrived (each message at most WAIT apart)."""
    messages: list[pb.WatchPoolsResponse] = []
    while sum(m.HasField("hit") for m in messages) < hits:
        message = await asyncio.wait_for(call.read(), WAIT)
        assert message is not grpc.aio.EOF, "the stream ended early"
        messages.append(message)
    return messages


@pytest.fixture
async def second_channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan


async def test_the_first_message_carries_every_pool(
    stub: jackpot_pb2_grpc.JackpotServiceStub,
) -> None:
    call = stub.WatchPools(pb.WatchPoolsRequest())
    first = await asyncio.wait_for(call.read(), WAIT)
    assert first.sequence == 1
    assert [p.group for p in first.pools] == list(GROUPS)
    pools = await stub.GetPools(pb.GetPoolsRequest())
    assert [p.current_amount for p in first.pools] == [p.current_amount for p in pools.pools]
    call.cancel()


async def test_a_groups_filter_and_resume_after(stub: jackpot_pb2_grpc.JackpotServiceStub) -> None:
    call = stub.WatchPools(pb.WatchPoolsRequest(groups=[pb.JACKPOT_GROUP_MEGA], resume_after=41))
    first = await asyncio.wait_for(call.read(), WAIT)
    assert first.sequence == 42
    assert [p.group for p in first.pools] == [pb.JACKPOT_GROUP_MEGA]
    await stub.Win(win_request(pb.JACKPOT_GROUP_MINOR, 1))  # not watched
    await stub.Win(win_request(pb.JACKPOT_GROUP_MEGA, 2))
    messages = await read_until_hits(call, 1)
    assert [m.sequence for m in messages] == list(range(43, 43 + len(messages)))
    assert (messages[-1].hit.group, messages[-1].hit.amount) == (pb.JACKPOT_GROUP_MEGA, 2)
    # Only the watched pool, in the updates too (the minor win moved none of them).
    assert all(p.group == pb.JACKPOT_GROUP_MEGA for m in messages for p in m.pools)
    call.cancel()


async def test_a_bad_group_is_invalid_argument(
    stub: jackpot_pb2_grpc.JackpotServiceStub,
) -> None:
    call = stub.WatchPools(pb.WatchPoolsRequest(groups=[pb.JACKPOT_GROUP_UNSPECIFIED]))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await asyncio.wait_for(call.read(), WAIT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "groups[0]" in (raised.value.details() or "")


async def test_every_watcher_sees_every_win_once_in_order_without_gaps(
    stub: jackpot_pb2_grpc.JackpotServiceStub, second_channel: grpc.aio.Channel
) -> None:
    other = jackpot_pb2_grpc.JackpotServiceStub(second_channel)
    calls = [s.WatchPools(pb.WatchPoolsRequest()) for s in (stub, other) for _ in range(3)]
    for call in calls:  # every watcher is registered before the first win
        assert (await asyncio.wait_for(call.read(), WAIT)).sequence == 1
    wins = []
    for n in range(12):
        wins.append(await stub.Win(win_request(GROUPS[n % 3], 1 + n)))
        # Contributions move the pools between the wins: pool updates interleave.
        await stub.Contribute(
            pb.ContributeRequest(game_id=random_game_id("watch"), wager_amount=10_000)
        )
    expected = [(w.win_id, w.actual_win_amount, w.pool.group) for w in wins]
    for call in calls:
        messages = await read_until_hits(call, len(wins))
        assert [m.sequence for m in messages] == list(range(2, len(messages) + 2))
        hits = [(m.hit.win_id, m.hit.amount, m.hit.group) for m in messages if m.HasField("hit")]
        assert hits == expected
        assert all(m.hit.ledger_seq > 0 for m in messages if m.HasField("hit"))
        call.cancel()


async def test_pool_updates_are_coalesced_and_reach_the_watcher(
    stub: jackpot_pb2_grpc.JackpotServiceStub, server: RunningServer
) -> None:
    call = stub.WatchPools(pb.WatchPoolsRequest())
    await asyncio.wait_for(call.read(), WAIT)
    sent_before = server.watch_hub.counters.updates_sent
    last = None
    for _ in range(20):
        last = await stub.Contribute(
            pb.ContributeRequest(game_id=random_game_id("watch"), wager_amount=10_000)
        )
    assert last is not None
    target = [g.amount for g in last.pool_amounts]
    while True:
        message = await asyncio.wait_for(call.read(), WAIT)
        if [p.current_amount for p in message.pools] == target:
            break
    # 20 commits, at most one update per 100 ms: far fewer messages than commits (the
    # contributions take well under 2 s here, so at most about 20 intervals pass).
    for _ in range(100):  # counted once the write returned, maybe just after the read
        if server.watch_hub.counters.updates_sent > sent_before:
            break
        await asyncio.sleep(0.01)
    sent = server.watch_hub.counters.updates_sent - sent_before
    assert 1 <= sent <= 20
    call.cancel()


async def test_watchers_end_unavailable_on_shutdown(settings: Settings, database_url: str) -> None:
    running = await start_server(
        dataclasses.replace(
            settings, process=dataclasses.replace(settings.process, drain_delay=0.3)
        ),
        database_url,
        port=0,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            call = jackpot_pb2_grpc.JackpotServiceStub(channel).WatchPools(pb.WatchPoolsRequest())
            await asyncio.wait_for(call.read(), WAIT)
            stopping = asyncio.create_task(running.stop(grace=5.0))
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                while True:
                    await asyncio.wait_for(call.read(), WAIT)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in (raised.value.details() or "")
            await stopping
    finally:
        await running.stop(grace=1.0)


# --- two server instances on one database: changes cross by LISTEN/NOTIFY ------------------

CROSS_PROCESS_GOAL = 0.25  # seconds, the bench's figure; asserted 5x looser


@pytest.fixture
async def other_server(settings: Settings, database_url: str) -> AsyncIterator[RunningServer]:
    """A second server on the same database: it shares nothing in memory with `server`."""
    running = await start_server(settings, database_url, port=0)
    yield running
    await running.stop(grace=1.0)


async def test_a_win_on_one_server_reaches_a_watcher_of_another_once(
    stub: jackpot_pb2_grpc.JackpotServiceStub, other_server: RunningServer
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{other_server.port}") as channel:
        call = jackpot_pb2_grpc.JackpotServiceStub(channel).WatchPools(pb.WatchPoolsRequest())
        first = await asyncio.wait_for(call.read(), WAIT)
        wins, delays, told = [], [], []
        for n in range(5):
            wins.append(await stub.Win(win_request(GROUPS[n % 3], 1 + n)))
            answered = asyncio.get_running_loop().time()
            while True:
                message = await asyncio.wait_for(call.read(), WAIT)
                if message.HasField("hit"):
                    delays.append(asyncio.get_running_loop().time() - answered)
                    told.append((message.hit.win_id, message.hit.amount))
                    break
        assert max(delays) < 5 * CROSS_PROCESS_GOAL, delays
        # The pools the other server saw move follow too; then nothing more arrives.
        contributed = await stub.Contribute(
            pb.ContributeRequest(game_id=random_game_id("watch"), wager_amount=10_000)
        )
        target = [g.amount for g in contributed.pool_amounts]
        messages: list[pb.WatchPoolsResponse] = []
        while not messages or [p.current_amount for p in messages[-1].pools] != target:
            messages.append(await asyncio.wait_for(call.read(), WAIT))
        assert not any(m.HasField("hit") for m in messages)  # no win told twice
        assert told == [(w.win_id, w.actual_win_amount) for w in wins]
        assert first.sequence == 1 and messages[-1].sequence >= 7
        call.cancel()
        # One refresh per notification burst on the other server, never one per watcher.
        assert other_server.watch_hub.counters.refreshes >= 1


async def test_without_listen_a_polling_server_still_tells_another_servers_win(
    stub: jackpot_pb2_grpc.JackpotServiceStub, settings: Settings, database_url: str
) -> None:
    """Behind PgBouncer (transaction mode) nothing may LISTEN: the hub reads every
    JACKPOT_SNAPSHOT_TTL while anyone watches."""
    polling = await start_server(
        dataclasses.replace(
            settings,
            database=dataclasses.replace(settings.database, pgbouncer=True),
            service=dataclasses.replace(settings.service, snapshot_ttl=0.2),
        ),
        database_url,
        port=0,
    )
    try:
        assert polling.listener is None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{polling.port}") as channel:
            call = jackpot_pb2_grpc.JackpotServiceStub(channel).WatchPools(pb.WatchPoolsRequest())
            await asyncio.wait_for(call.read(), WAIT)
            paid = await stub.Win(win_request(pb.JACKPOT_GROUP_MINOR, 3))
            messages = await read_until_hits(call, 1)
            assert messages[-1].hit.win_id == paid.win_id
            call.cancel()
    finally:
        await polling.stop(grace=1.0)


async def test_two_server_processes_each_watcher_sees_the_others_wins_once(
    database_url: str, tmp_path: Path
) -> None:
    """Two `jackpot serve` processes on one database; a watcher on each; wins paid on
    both: every watcher sees every win exactly once and in order."""
    with (
        serving(database_url, tmp_path / "a") as first,
        serving(database_url, tmp_path / "b") as second,
    ):
        async with (
            grpc.aio.insecure_channel(first.target) as channel_a,
            grpc.aio.insecure_channel(second.target) as channel_b,
        ):
            stubs = [jackpot_pb2_grpc.JackpotServiceStub(c) for c in (channel_a, channel_b)]
            calls = [s.WatchPools(pb.WatchPoolsRequest()) for s in stubs]
            for call in calls:
                await asyncio.wait_for(call.read(), WAIT)
            paid = [await stubs[n % 2].Win(win_request(GROUPS[n % 3], 1 + n)) for n in range(6)]
            for call in calls:
                messages = await read_until_hits(call, len(paid))
                told = [m.hit.win_id for m in messages if m.HasField("hit")]
                # Each exactly once, in ledger order: each process reads `id > last`.
                assert told == [w.win_id for w in paid]
                assert [m.sequence for m in messages] == list(range(2, len(messages) + 2))
                call.cancel()


async def test_on_sigterm_watchers_end_unavailable_after_the_drain_delay(
    database_url: str, tmp_path: Path
) -> None:
    with serving(database_url, tmp_path, JACKPOT_DRAIN_DELAY="1.0") as process:
        async with grpc.aio.insecure_channel(process.target) as channel:
            call = jackpot_pb2_grpc.JackpotServiceStub(channel).WatchPools(pb.WatchPoolsRequest())
            await asyncio.wait_for(call.read(), WAIT)
            process.signal(signal.SIGTERM)
            signalled = asyncio.get_running_loop().time()
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                while True:
                    await asyncio.wait_for(call.read(), WAIT)
            ended = asyncio.get_running_loop().time() - signalled
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in (raised.value.details() or "")
            # Not before the drain delay (load balancers first see NOT_SERVING), and not
            # held until the shutdown grace (10 s) either.
            assert 0.9 <= ended < 5 * 1.0, ended
        assert process.wait(20) == 0
