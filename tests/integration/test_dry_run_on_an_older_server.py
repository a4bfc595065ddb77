"""A server from before validate_only drops the field (a proto3 unknown field) and would
apply a dry run for real. `jackpot smoke` and `jackpot loadtest --validate-only` read the
server's descriptors over reflection first and send no write to such a server.

The older server here is a real gRPC server whose reflection describes jackpot.proto
without validate_only, and whose JackpotService answers GetPools and counts every write
it receives (it would apply them)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.contract.names import JACKPOT_SERVICE
from testkit.ops_commands import run_ops
from testkit.partial_servicer import PartialJackpotServicer


def descriptors_without_validate_only() -> descriptor_pool.DescriptorPool:
    """jackpot.proto and its imports, as a release before validate_only described them."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        for message in proto.message_type:
            kept = [f for f in message.field if f.name != "validate_only"]
            del message.field[:]
            message.field.extend(kept)
        pool.Add(proto)
        added.add(file.name)

    add(pb.DESCRIPTOR)
    return pool


class OlderRelease(PartialJackpotServicer):
    def __init__(self) -> None:
        self.writes: list[str] = []

    async def GetPools(self, request: Any, context: Any) -> pb.GetPoolsResponse:
        return pb.GetPoolsResponse(
            pools=[
                pb.Pool(group=g, current_amount=10_000, seed_amount=100)
                for g in (pb.JACKPOT_GROUP_MINOR, pb.JACKPOT_GROUP_MAJOR, pb.JACKPOT_GROUP_MEGA)
            ]
        )

    async def Contribute(self, request: Any, context: Any) -> pb.ContributeResponse:
        self.writes.append("Contribute")
        return pb.ContributeResponse()

    async def ContributeBatch(self, request: Any, context: Any) -> pb.ContributeBatchResponse:
        self.writes.append("ContributeBatch")
        return pb.ContributeBatchResponse()

    async def Win(self, request: Any, context: Any) -> pb.WinResponse:
        self.writes.append("Win")
        return pb.WinResponse()


@pytest.fixture
async def older_server() -> AsyncIterator[tuple[str, OlderRelease]]:
    server = grpc.aio.server()
    servicer = OlderRelease()
    jackpot_pb2_grpc.add_JackpotServiceServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        (JACKPOT_SERVICE, reflection.SERVICE_NAME),
        server,
        pool=descriptors_without_validate_only(),
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", servicer
    await server.stop(0)


async def test_smoke_sends_no_dry_run_to_a_server_that_would_apply_it(
    older_server: tuple[str, OlderRelease], settings: Settings
) -> None:
    target, servicer = older_server
    code, out = await asyncio.to_thread(
        run_ops, settings, "smoke", "--grpc-target", target, "--no-audit", "--json"
    )
    data = json.loads(out)
    assert code == 1
    assert [s["step"] for s in data["steps"]] == ["read pools", "server knows validate_only"]
    assert "does not know validate_only" in data["steps"][-1]["detail"]
    assert "--write" in data["steps"][-1]["detail"]
    assert servicer.writes == []


async def test_loadtest_validate_only_refuses_such_a_server(
    older_server: tuple[str, OlderRelease], settings: Settings
) -> None:
    target, servicer = older_server
    code, out = await asyncio.to_thread(
        run_ops,
        dataclasses.replace(settings, grpc=dataclasses.replace(settings.grpc, target=target)),
        "loadtest",
        "--kind",
        "contribute",
        "--validate-only",
        "--duration",
        "0.3",
        "--warmup",
        "0",
        "--json",
    )
    assert code == 1
    assert "does not know validate_only" in json.loads(out)["error"]
    assert servicer.writes == []
