"""gRPC core's call counts per server, read from channelz (entrypoints.core_calls)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from jackpot_grpc.entrypoints.core_calls import calls_started, listening_servers


async def test_each_server_counts_its_own_calls_though_both_asked_for_port_0() -> None:
    servers, ids, ports = [], [], []
    for _ in range(2):
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
        others = listening_servers()
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        (new,) = listening_servers() - others
        servers.append(server)
        ids.append(new)
    try:
        for server in servers:
            await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports[1]}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(3):
                await stub.Check(health_pb2.HealthCheckRequest())
        assert calls_started(ids[0]) == 0
        assert calls_started(ids[1]) == 3
    finally:
        for server in servers:
            await server.stop(None)
    assert calls_started(ids[1]) is None  # a stopped server is gone from channelz
