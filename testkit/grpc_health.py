"""grpc.health.v1 status of the jackpot service, asked from a test (sync or async)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jackpot_grpc.contract.names import JACKPOT_SERVICE

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_status(target: str, timeout: float = 1.0, service: str = JACKPOT_SERVICE) -> int | None:
    """grpc.health.v1 status of `service` at `target`, None if it does not answer."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return None
    status: int = reply.status
    return status


async def health_status_async(
    channel: grpc.aio.Channel, deadline_s: float = 0.5, service: str = JACKPOT_SERVICE
) -> int | None:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=deadline_s
        )
    except grpc.aio.AioRpcError:
        return None
    status: int = reply.status
    return status
