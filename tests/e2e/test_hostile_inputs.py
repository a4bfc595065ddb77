"""The bounds against hostile traffic, one at a time, against a real server (fast).

The same abuses at full size, with a canary measuring legitimate callers, are the slow
suite tests/reliability/test_abuse.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.database_health_probe import LIVENESS
from jackpot_grpc.entrypoints.server import RunningServer, start_server

SERVING = health_pb2.HealthCheckResponse.SERVING


# The strict server's keep-alive timeout, and how long a read waits for the server to close:
# 5x it, so a close at the timeout is never taken for a close by us.
KEEPALIVE = 0.5
READ_FOR = 5 * KEEPALIVE


@dataclasses.dataclass
class Answer:
    data: bytes
    closed_by_server: bool  # False: our read gave up after READ_FOR
    took: float


async def raw_http(port: int, request: bytes) -> Answer:
    """Send `request` as is; everything answered until the server closes (or READ_FOR
    seconds pass), whether the server closed, and how long that took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(request)
    answer, closed = b"", False
    try:
        async with asyncio.timeout(READ_FOR):
            while chunk := await reader.read(65536):
                answer += chunk
            closed = True
    except TimeoutError:
        pass
    except ConnectionResetError:  # closed with our request unread: a reset
        closed = True
    finally:
        writer.close()
    return Answer(answer, closed, time.monotonic() - started)


@pytest.fixture
async def strict(settings: Settings, database_url: str) -> AsyncIterator[RunningServer]:
    """A server with small HTTP bounds, so each is quick to reach."""
    tight = dataclasses.replace(
        settings,
        http=dataclasses.replace(settings.http, keepalive_timeout=KEEPALIVE, max_connections=4),
        grpc=dataclasses.replace(settings.grpc, max_in_flight_per_connection=2),
        health=dataclasses.replace(settings.health, on_demand_interval=10.0),
    )
    running = await start_server(tight, database_url, port=0)
    yield running
    await running.stop(grace=1.0)


async def test_a_compressed_body_is_refused_415_unread_and_the_connection_closed(
    strict: RunningServer,
) -> None:
    # Announces 10 MB of gzip and sends the first bytes only: an answer that waited for
    # (or inflated) the body would never come.
    head = (
        b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: 10000000\r\n\r\n\x1f\x8b\x08\x00"
    )
    answer = await raw_http(strict.health_port, head)
    assert answer.data.startswith(b"HTTP/1.1 415"), answer.data[:200]
    assert b"Connection: close" in answer.data
    assert answer.closed_by_server  # not left open waiting for the body
    assert strict.health_http.refusals.summary()["http"]["content_encoding"] == 1


async def test_a_body_on_a_get_is_refused_413_and_the_connection_closed(
    strict: RunningServer,
) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nxx"
    answer = await raw_http(strict.health_port, head)
    assert answer.data.startswith(b"HTTP/1.1 413"), answer.data[:200]
    assert b"Connection: close" in answer.data and answer.closed_by_server


async def test_half_sent_and_idle_connections_are_closed_at_the_keepalive_timeout(
    strict: RunningServer,
) -> None:
    # Time is the property: closed by the server at its keep-alive timeout (0.5 s), not at
    # once, and within 5x of it (READ_FOR).
    half = await raw_http(strict.health_port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-")
    assert half.data == b"" and half.closed_by_server and half.took > 0.3, half
    idle = await raw_http(strict.health_port, b"")
    assert idle.data == b"" and idle.closed_by_server, idle


async def test_connections_over_the_cap_are_answered_503_at_once(strict: RunningServer) -> None:
    held = [await asyncio.open_connection("127.0.0.1", strict.health_port) for _ in range(4)]
    try:
        await asyncio.sleep(0.05)
        # At once: an answer, where the keep-alive timeout would close without one.
        answer = await raw_http(strict.health_port, b"")
        assert answer.data.startswith(b"HTTP/1.1 503") and answer.closed_by_server, answer
    finally:
        for _, writer in held:
            writer.close()
    assert strict.health_http.refusals.summary()["http"]["connection_cap"] >= 1


async def test_concurrent_audits_on_demand_share_one_run(strict: RunningServer) -> None:
    import aiohttp

    auditor = strict.auditor
    assert auditor is not None
    await asyncio.sleep(0.2)  # the start-up audit
    runs = auditor.runs
    url = f"http://127.0.0.1:{strict.health_port}/health/jackpot?audit=now"
    async with aiohttp.ClientSession() as http:

        async def ask() -> str:
            async with http.get(url) as response:
                return str((await response.json())["ledger"]["audit_now"])

        answers = await asyncio.gather(*(ask() for _ in range(20)))
    # The start-up audit ran within the interval: everyone got it, no new scan.
    assert auditor.runs - runs <= 1, (runs, auditor.runs, answers)
    assert set(answers) <= {"ran", "shared", "recent"} and answers.count("ran") <= 1


async def test_liveness_is_serving_and_ignores_the_database(strict: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{strict.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in (LIVENESS, "", "jackpot.v1.JackpotService"):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert answer.status == SERVING, name
        strict.probe.healthy = False  # as after JACKPOT_HEALTH_FAILURES failed probes
        await strict.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        live = await health.Check(health_pb2.HealthCheckRequest(service=LIVENESS), timeout=5)
        assert live.status == SERVING


async def test_calls_over_the_connection_bound_are_resource_exhausted_with_retry_info(
    strict: RunningServer,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{strict.port}") as channel:
        stub = jackpot_pb2_grpc.JackpotServiceStub(channel)

        async def contribute(n: int) -> grpc.StatusCode:
            request = pb.ContributeRequest(game_id="g", wager_amount=100, idempotency_key=f"k{n}")
            try:
                await stub.Contribute(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    trailers = dict(exc.trailing_metadata() or ())
                    assert "grpc-status-details-bin" in trailers  # RetryInfo
                return exc.code()
            return grpc.StatusCode.OK

        codes = await asyncio.gather(*(contribute(n) for n in range(40)))
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert refused > 0
    counted = strict.health_http.refusals.summary()["admission"]["connection_in_flight_limit"]
    assert counted == refused


@pytest.fixture
async def short_queue(settings: Settings, database_url: str) -> AsyncIterator[RunningServer]:
    """A server on which at most 4 calls may wait in gRPC core to be taken."""
    running = await start_server(
        dataclasses.replace(settings, grpc=dataclasses.replace(settings.grpc, max_pending_calls=4)),
        database_url,
        port=0,
    )
    yield running
    await running.stop(grace=1.0)


async def test_calls_grpc_core_drops_before_the_server_takes_them_are_counted(
    short_queue: RunningServer,
) -> None:
    """Past GRPC_MAX_PENDING_CALLS waiting, gRPC core drops calls before any interceptor
    sees them; channelz still counts them, and /metrics reports the difference."""
    sent = 20
    connected, go = threading.Event(), threading.Event()

    def call_while_the_loop_is_blocked() -> list[grpc.StatusCode]:
        with grpc.insecure_channel(f"127.0.0.1:{short_queue.port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=5)  # core's threads answer
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
            connected.set()
            go.wait(5)
            calls = [stub.GetPools.future(pb.GetPoolsRequest(), timeout=5) for _ in range(sent)]
            return [call.code() for call in calls]

    async def figures() -> tuple[int, float, float]:
        base = f"http://127.0.0.1:{short_queue.health_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as response:
                summary = (await response.json())["refusals"]
            async with http.get(f"{base}/metrics/prometheus") as response:
                text = await response.text()
        values = {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        return (
            int(summary.get("grpc_core", {}).get("not_taken", 0)),
            values["jackpot_grpc_core_calls_started_total"],
            values["jackpot_grpc_calls_taken_total"],
        )

    before, _, _ = await figures()
    caller = asyncio.create_task(asyncio.to_thread(call_while_the_loop_is_blocked))
    assert await asyncio.to_thread(connected.wait, 5)
    go.set()
    time.sleep(0.5)  # noqa: ASYNC251 (the server's loop takes no call meanwhile)
    codes = await caller
    # About 4 waited in core's queue and one more in grpc.aio's request for the next call:
    # those were taken and answered once the loop ran again; core dropped the rest at once.
    dropped = codes.count(grpc.StatusCode.CANCELLED)
    assert codes.count(grpc.StatusCode.OK) == sent - dropped, codes
    assert dropped >= sent - 6, codes
    not_taken, started, taken = await figures()
    assert not_taken - before == dropped
    assert started - taken == not_taken
