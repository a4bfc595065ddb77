"""The gateway's channel: round_robin over every address, skipping servers that are not
SERVING (client-side health checking), over real in-process gRPC servers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from jackpot_grpc.gateway.app import create_gateway_app
from jackpot_grpc.transport.balancing import balanced_channel_options, channel_target

WHO = "/test.Who/Name"


def test_service_config_is_round_robin_with_health_checking() -> None:
    options = dict(balanced_channel_options())
    config = json.loads(options["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": ""}


@pytest.mark.parametrize(
    ("raw", "target"),
    [
        ("localhost:50051", "localhost:50051"),
        ("dns:///jackpot.internal:50051", "dns:///jackpot.internal:50051"),
        ("ipv4:10.0.0.1:1,10.0.0.2:2", "ipv4:10.0.0.1:1,10.0.0.2:2"),
        ("10.0.0.1:1, 10.0.0.2:2", "ipv4:10.0.0.1:1,10.0.0.2:2"),
        ("[::1]:1,[fd00::2]:2", "ipv6:[::1]:1,[fd00::2]:2"),
    ],
)
def test_channel_target(raw: str, target: str) -> None:
    assert channel_target(raw) == target


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("a.internal:1,b.internal:2", "'a.internal:1' in a list is not an IP address"),
        ("10.0.0.1,10.0.0.2:2", "'10.0.0.1' in a list is not an IP address"),
        ("10.0.0.1:1,[::1]:2", "mixes IPv4 and IPv6"),
        ("  ", "JACKPOT_GRPC_TARGET is empty"),
    ],
)
def test_bad_targets_are_refused_naming_the_setting(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match="JACKPOT_GRPC_TARGET") as caught:
        channel_target(raw)
    assert message in str(caught.value)


def test_the_gateway_refuses_a_list_of_names() -> None:
    with pytest.raises(ValueError, match="dns:///"):
        create_gateway_app("a:1,b:2", max_body_bytes=1024, metrics_url="http://127.0.0.1:1/")


@dataclass
class Replica:
    name: str
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    port: int


async def _replica(name: str) -> Replica:
    async def who(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return name.encode()

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "test.Who", {"Name": grpc.unary_unary_rpc_method_handler(who)}
    )
    server.add_generic_rpc_handlers((handler,))
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return Replica(name, server, health, port)


@pytest.fixture
async def replicas() -> AsyncIterator[list[Replica]]:
    started = [await _replica("a"), await _replica("b")]
    yield started
    await asyncio.gather(*(r.server.stop(None) for r in started))


async def _answers(channel: grpc.aio.Channel, calls: int) -> dict[str, int]:
    who = channel.unary_unary(WHO)
    counts: dict[str, int] = {}
    for _ in range(calls):
        name = (await who(b"", timeout=2)).decode()
        counts[name] = counts.get(name, 0) + 1
    return counts


async def _until(channel: grpc.aio.Channel, expected: set[str], within: float = 5.0) -> None:
    """Calls until a round of 10 lands only on `expected`'s servers (and on all of them)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        seen = set(await _answers(channel, 10))
        if seen == expected:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"calls reached {seen}, expected {expected}")
        await asyncio.sleep(0.05)


async def test_calls_spread_over_every_address_and_skip_a_not_serving_one(
    replicas: list[Replica],
) -> None:
    a, b = replicas
    target = channel_target(f"127.0.0.1:{a.port},127.0.0.1:{b.port}")
    async with grpc.aio.insecure_channel(target, options=balanced_channel_options()) as channel:
        await _until(channel, {"a", "b"})
        counts = await _answers(channel, 20)
        assert counts == {"a": 10, "b": 10}  # round robin, not pick_first

        await b.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await _until(channel, {"a"})
        assert await _answers(channel, 20) == {"a": 20}

        await b.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await _until(channel, {"a", "b"})

        await a.server.stop(None)  # a dead server is skipped too
        await _until(channel, {"b"})
