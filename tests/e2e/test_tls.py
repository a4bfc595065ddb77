"""TLS on the gRPC port: a client that trusts the certificate is served, plaintext is not."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import start_server
from jackpot_grpc.transport.tls import open_channel
from testkit.certs import self_signed


async def test_tls_port_serves_trusting_clients_only(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    key, cert = self_signed(tmp_path)
    tls = dataclasses.replace(
        settings, tls=dataclasses.replace(settings.tls, cert_file=cert, key_file=key, ca_file=cert)
    )
    running = await start_server(tls, database_url, port=0)
    try:
        async with open_channel(tls.tls, f"localhost:{running.port}") as channel:
            reply = await jackpot_pb2_grpc.JackpotServiceStub(channel).GetPools(
                pb.GetPoolsRequest(), timeout=10
            )
        assert [p.current_amount for p in reply.pools] == [10000, 100000, 1000000]

        async with grpc.aio.insecure_channel(f"localhost:{running.port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await jackpot_pb2_grpc.JackpotServiceStub(plain).GetPools(
                    pb.GetPoolsRequest(), timeout=3
                )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop(grace=1.0)
