"""GET /api/jackpot/pools:watch over real HTTP: Server-Sent Events (id = sequence,
Last-Event-ID resumes, keepalive comments) or newline-delimited {"result": ...}; a cap is a
429. The gateway reaches the service over gRPC only."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import aiohttp
import grpc
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from testkit.gateways import gateway_to
from testkit.random_refs import random_game_id, random_key, random_user_id

WATCH = "/api/jackpot/pools:watch"
SSE = {"Accept": "text/event-stream"}
WAIT = 10.0
KEEPALIVE = 0.2


def gateway_for(server: RunningServer) -> AbstractAsyncContextManager[str]:
    return gateway_to(f"127.0.0.1:{server.port}", stream_keepalive=KEEPALIVE)


@pytest.fixture
async def base(server: RunningServer) -> AsyncIterator[str]:
    async with gateway_for(server) as url:
        yield url


async def next_event(response: aiohttp.ClientResponse) -> tuple[list[str], dict[str, str]]:
    """The comment lines before the next event, and the event's fields."""
    comments: list[str] = []
    fields: dict[str, str] = {}
    while True:
        line = (await asyncio.wait_for(response.content.readline(), WAIT)).decode()
        assert line, "the stream ended"
        line = line.rstrip("\n")
        if not line:
            if fields:
                return comments, fields
            continue
        if line.startswith(":"):
            comments.append(line)
            continue
        name, _, value = line.partition(": ")
        fields[name] = value


async def win(stub: jackpot_pb2_grpc.JackpotServiceStub, amount: int) -> pb.WinResponse:
    reply: pb.WinResponse = await stub.Win(
        pb.WinRequest(
            group=pb.JACKPOT_GROUP_MAJOR,
            game_id=random_game_id("rest"),
            user_id=str(random_user_id()),
            win_amount=amount,
            idempotency_key=random_key("rest"),
        )
    )
    return reply


async def test_sse_numbers_events_by_sequence_and_tells_hits(
    base: str, http: aiohttp.ClientSession, stub: jackpot_pb2_grpc.JackpotServiceStub
) -> None:
    async with http.get(base + WATCH, headers=SSE) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        _, first = await next_event(response)
        assert first["id"] == "1"
        data = json.loads(first["data"])
        assert [p["group"] for p in data["pools"]] == [
            "JACKPOT_GROUP_MINOR",
            "JACKPOT_GROUP_MAJOR",
            "JACKPOT_GROUP_MEGA",
        ]
        paid = await win(stub, 7)
        ids, hit = [], None
        while hit is None:
            _, event = await next_event(response)
            ids.append(int(event["id"]))
            hit = json.loads(event["data"]).get("hit")
        assert ids == list(range(2, 2 + len(ids)))
        assert hit["winId"] == str(paid.win_id)
        assert (hit["group"], hit["amount"]) == ("JACKPOT_GROUP_MAJOR", "7")


async def test_last_event_id_resumes_numbering_from_the_current_state(
    base: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(base + WATCH, headers={**SSE, "Last-Event-ID": "41"}) as response:
        _, first = await next_event(response)
        assert first["id"] == "42"
        assert len(json.loads(first["data"])["pools"]) == 3  # the whole current state
    async with http.get(base + WATCH, headers={**SSE, "Last-Event-ID": "x1"}) as response:
        assert response.status == 400
        body = await response.json()
        assert "Last-Event-ID" in body["message"]


async def test_an_idle_sse_stream_gets_keepalive_comments(
    base: str, http: aiohttp.ClientSession, stub: jackpot_pb2_grpc.JackpotServiceStub
) -> None:
    async with http.get(base + WATCH, headers=SSE) as response:
        await next_event(response)
        await asyncio.sleep(3 * KEEPALIVE)  # idle
        await win(stub, 3)
        comments, _ = await next_event(response)
        assert ": keepalive" in comments


async def test_without_sse_it_is_one_json_result_a_line(
    base: str, http: aiohttp.ClientSession, stub: jackpot_pb2_grpc.JackpotServiceStub
) -> None:
    query = "?groups=JACKPOT_GROUP_MAJOR"
    async with http.get(base + WATCH + query) as response:
        assert response.status == 200
        assert response.content_type == "application/x-ndjson"
        first = json.loads(await asyncio.wait_for(response.content.readline(), WAIT))
        assert set(first) == {"result"}
        assert first["result"]["sequence"] == "1"
        assert [p["group"] for p in first["result"]["pools"]] == ["JACKPOT_GROUP_MAJOR"]
        await win(stub, 5)
        while True:
            line = json.loads(await asyncio.wait_for(response.content.readline(), WAIT))
            if line["result"]["hit"] is not None:
                break
        assert line["result"]["hit"]["amount"] == "5"


async def test_past_the_cap_it_is_429_and_a_stopping_server_ends_the_stream(
    settings: Settings, database_url: str, http: aiohttp.ClientSession
) -> None:
    running = await start_server(
        dataclasses.replace(settings, watch=dataclasses.replace(settings.watch, max_watchers=1)),
        database_url,
        port=0,
    )
    try:
        async with gateway_for(running) as base, http.get(base + WATCH) as first:
            await asyncio.wait_for(first.content.readline(), WAIT)
            async with http.get(base + WATCH) as second:
                assert second.status == 429
                body = await second.json()
                assert body["details"][0]["reason"] == "TOO_MANY_WATCHERS"
            await running.stop(grace=2.0)
            last = json.loads(await asyncio.wait_for(first.content.readline(), WAIT))
            while "error" not in last:  # updates written before the stop, if any
                last = json.loads(await asyncio.wait_for(first.content.readline(), WAIT))
            assert last["error"]["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
            assert last["error"]["details"][0]["reason"] == "SHUTTING_DOWN"
    finally:
        await running.stop(grace=1.0)
