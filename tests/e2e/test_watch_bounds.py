"""WatchPools' bounds over a real server: caps per connection and in total, slow readers
get the newest state with a count of what they skipped, stuck ones are cut off, and the
figures are on /metrics/prometheus."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from testkit.calls import error_reason
from testkit.random_refs import random_game_id

WAIT = 10.0
# A connection of its own (no shared subchannel), whose reader lets the server send only
# about 1 KiB ahead: a reader that stops reading holds the server's writes at once.
NARROW = (
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.http2.lookahead_bytes", 1024),
    ("grpc.http2.bdp_probe", 0),
)
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


@pytest.fixture
async def bounded(settings: Settings, database_url: str) -> AsyncIterator[RunningServer]:
    running = await start_server(
        dataclasses.replace(
            settings,
            watch=dataclasses.replace(
                settings.watch, max_watchers=3, max_per_connection=2, interval=0.01, max_lag=1.0
            ),
        ),
        database_url,
        port=0,
    )
    yield running
    await running.stop(grace=1.0)


def channel_to(server: RunningServer, options: tuple[tuple[str, int], ...]) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options)


async def refused(stub: jackpot_pb2_grpc.JackpotServiceStub) -> grpc.aio.AioRpcError:
    call = stub.WatchPools(pb.WatchPoolsRequest())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await asyncio.wait_for(call.read(), WAIT)
    return raised.value


async def contribute(stub: jackpot_pb2_grpc.JackpotServiceStub, times: int) -> None:
    for _ in range(times):
        await stub.Contribute(pb.ContributeRequest(game_id=random_game_id(), wager_amount=10_000))


async def test_watchers_are_capped_per_connection_and_in_total(bounded: RunningServer) -> None:
    async with (
        channel_to(bounded, OWN_CONNECTION) as one,
        channel_to(bounded, OWN_CONNECTION) as two,
    ):
        first, second = (jackpot_pb2_grpc.JackpotServiceStub(c) for c in (one, two))
        calls = [first.WatchPools(pb.WatchPoolsRequest()) for _ in range(2)]
        for call in calls:
            await asyncio.wait_for(call.read(), WAIT)
        error = await refused(first)  # a third on this connection
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_reason(error) == "TOO_MANY_WATCHERS"
        assert "on this connection" in (error.details() or "")
        calls.append(second.WatchPools(pb.WatchPoolsRequest()))
        await asyncio.wait_for(calls[-1].read(), WAIT)
        error = await refused(second)  # a fourth in all
        assert error_reason(error) == "TOO_MANY_WATCHERS"
        assert "serves 3 watchers" in (error.details() or "")
        calls.pop().cancel()  # a place is free again
        await asyncio.sleep(0.2)
        again = second.WatchPools(pb.WatchPoolsRequest())
        assert (await asyncio.wait_for(again.read(), WAIT)).sequence == 1
        assert bounded.watch_hub.counters.refused == 2
        for call in [*calls, again]:
            call.cancel()


async def test_a_slow_reader_gets_the_newest_state_and_the_count_it_skipped(
    bounded: RunningServer, stub: jackpot_pb2_grpc.JackpotServiceStub
) -> None:
    async with channel_to(bounded, NARROW) as narrow:
        call = jackpot_pb2_grpc.JackpotServiceStub(narrow).WatchPools(pb.WatchPoolsRequest())
        messages = [await asyncio.wait_for(call.read(), WAIT)]
        writer = asyncio.create_task(contribute(stub, 60))
        while not writer.done():
            messages.append(await asyncio.wait_for(call.read(), WAIT))
            await asyncio.sleep(0.15)  # slower than the 10 ms updates, faster than the cut
        await writer
        last = (await stub.GetPools(pb.GetPoolsRequest())).pools
        while [p.current_amount for p in messages[-1].pools] != [p.current_amount for p in last]:
            messages.append(await asyncio.wait_for(call.read(), WAIT))
        assert [m.sequence for m in messages] == list(range(1, len(messages) + 1))
        assert sum(m.skipped_updates for m in messages) > 0  # the explicit gap marker
        assert bounded.watch_hub.counters.updates_skipped >= sum(
            m.skipped_updates for m in messages
        )
        assert bounded.watch_hub.counters.watchers_cut == 0
        call.cancel()


async def test_a_reader_that_stops_reading_is_cut_off(
    bounded: RunningServer, stub: jackpot_pb2_grpc.JackpotServiceStub
) -> None:
    async with channel_to(bounded, NARROW) as narrow:
        call = jackpot_pb2_grpc.JackpotServiceStub(narrow).WatchPools(pb.WatchPoolsRequest())
        await asyncio.wait_for(call.read(), WAIT)
        # Not reading: the server's writes stop once about 1 KiB is on its way.
        for _ in range(100):
            await contribute(stub, 1)
            if bounded.watch_hub.counters.watchers_cut:
                break
            await asyncio.sleep(0.05)
        assert bounded.watch_hub.counters.watchers_cut == 1
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            while True:
                await asyncio.wait_for(call.read(), WAIT)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_reason(raised.value) == "WATCHER_TOO_SLOW"
        await asyncio.sleep(0.1)
        assert bounded.watch_hub.watchers == 0


async def test_the_watch_figures_are_on_the_metrics_endpoint(
    bounded: RunningServer, stub: jackpot_pb2_grpc.JackpotServiceStub
) -> None:
    call = stub.WatchPools(pb.WatchPoolsRequest())
    await asyncio.wait_for(call.read(), WAIT)
    url = f"http://127.0.0.1:{bounded.health_port}/metrics/prometheus"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    assert "jackpot_watchers 1.0" in text
    for name in ("updates_sent", "updates_skipped", "watchers_cut", "watchers_refused"):
        assert f"jackpot_watch_{name}_total" in text
    call.cancel()


@pytest.fixture
async def stub(bounded: RunningServer) -> AsyncIterator[jackpot_pb2_grpc.JackpotServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bounded.port}") as channel:
        yield jackpot_pb2_grpc.JackpotServiceStub(channel)
