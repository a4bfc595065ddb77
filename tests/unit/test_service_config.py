"""The shipped retry service config: what it retries, and that gRPC itself accepts it."""

from __future__ import annotations

import json

import grpc
import pytest
from jackpot.v1 import jackpot_pb2

from jackpot_grpc.client.service_config import WRITES, channel_options, service_config
from testkit.partial_servicer import PartialJackpotServicer

SERVICE = jackpot_pb2.DESCRIPTOR.services_by_name["JackpotService"]


def retried_methods(document: dict[str, object]) -> set[str]:
    entries = document["methodConfig"]
    assert isinstance(entries, list)
    return {name["method"] for entry in entries for name in entry["name"]}


def test_reads_always_writes_only_when_every_write_is_keyed() -> None:
    reads = {"GetPools", "GetStatistics", "GetConfig", "ListWins", "Check"}
    assert retried_methods(service_config(keyed_writes=False)) == reads
    assert retried_methods(service_config(keyed_writes=True)) == reads | WRITES
    assert "UpdateConfig" not in retried_methods(service_config(keyed_writes=True))
    for method in WRITES | {"GetPools", "GetStatistics", "GetConfig", "ListWins"}:
        assert method in SERVICE.methods_by_name  # names match the proto


def test_only_transient_codes_are_retried_with_backoff() -> None:
    for entry in service_config(keyed_writes=True)["methodConfig"]:
        policy = entry["retryPolicy"]
        assert set(policy["retryableStatusCodes"]) == {"UNAVAILABLE", "RESOURCE_EXHAUSTED"}
        assert 2 <= policy["maxAttempts"] <= 5
        assert policy["initialBackoff"].endswith("s") and policy["backoffMultiplier"] > 1


@pytest.mark.parametrize("keyed", [False, True])
def test_channel_options_carry_the_config_and_turn_retries_on(keyed: bool) -> None:
    options = dict(channel_options(keyed_writes=keyed))
    assert json.loads(options["grpc.service_config"]) == service_config(keyed_writes=keyed)
    assert options["grpc.enable_retries"] == 1


async def test_an_unavailable_read_is_retried_then_answered() -> None:
    """A real server that fails the first two GetPools with UNAVAILABLE: the CLI's channel
    options make the third attempt succeed without the caller seeing the failures."""
    from jackpot.v1 import jackpot_pb2_grpc

    attempts = 0

    class Flaky(PartialJackpotServicer):
        async def GetPools(
            self, request: jackpot_pb2.GetPoolsRequest, context: grpc.aio.ServicerContext
        ) -> jackpot_pb2.GetPoolsResponse:
            nonlocal attempts
            attempts += 1
            if attempts < 3:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
            return jackpot_pb2.GetPoolsResponse()

    server = grpc.aio.server()
    jackpot_pb2_grpc.add_JackpotServiceServicer_to_server(Flaky(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        options = channel_options(keyed_writes=False)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as chan:
            stub = jackpot_pb2_grpc.JackpotServiceStub(chan)
            await stub.GetPools(jackpot_pb2.GetPoolsRequest(), timeout=10)
        assert attempts == 3
    finally:
        await server.stop(None)
