"""grpc.health.v1 follows the database, on the real PostgreSQL.

The database "goes away" for real: connections to it are refused
(`ALTER DATABASE ... ALLOW_CONNECTIONS false`) and its sessions are terminated.
"""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.entrypoints.server import RunningServer
from testkit.outage import database_outage

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE = "jackpot.v1.JackpotService"
OUTAGE_DETECTED_WITHIN = 5.0
RECOVERY_WITHIN = 10.0


async def status_of(health: health_pb2_grpc.HealthStub, service: str) -> int:
    reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
    status: int = reply.status
    return status


async def wait_for_status(health: health_pb2_grpc.HealthStub, wanted: int, within: float) -> float:
    """Poll Check on both names until both report `wanted`; seconds it took."""
    started = time.monotonic()
    while True:
        statuses = [await status_of(health, s) for s in ("", SERVICE)]
        if statuses == [wanted, wanted]:
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"still {statuses} after {within}s"
        await asyncio.sleep(0.1)


async def test_serving_for_the_server_and_the_service(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    assert await status_of(health, "") == SERVING
    assert await status_of(health, SERVICE) == SERVING


async def test_unknown_service_is_not_found(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    try:
        await status_of(health, "no.such.Service")
    except grpc.aio.AioRpcError as error:
        assert error.code() is grpc.StatusCode.NOT_FOUND
    else:
        raise AssertionError("an unknown service must not report a status")


async def test_not_serving_while_the_database_is_away_and_serving_when_it_returns(
    channel: grpc.aio.Channel,
    stub: jackpot_pb2_grpc.JackpotServiceStub,
    server: RunningServer,
    admin_url: str,
    database_url: str,
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    await wait_for_status(health, SERVING, 1.0)

    async with database_outage(admin_url, database_url):
        await wait_for_status(health, NOT_SERVING, OUTAGE_DETECTED_WITHIN)
        with_key = pb.ContributeRequest(game_id="g", wager_amount=1000, idempotency_key="outage")
        try:
            await stub.Contribute(with_key, timeout=10)
        except grpc.aio.AioRpcError as error:
            assert error.code() is grpc.StatusCode.UNAVAILABLE, error
        else:
            raise AssertionError("a contribution during the outage must not succeed")
        # The server process itself still answers health checks.
        assert await status_of(health, "") == NOT_SERVING

    await wait_for_status(health, SERVING, RECOVERY_WITHIN)
    reply = await stub.Contribute(with_key, timeout=10)
    assert (reply.replayed, reply.total_contribution) == (False, 10)  # nothing was half-written
    assert server.probe.healthy is True
