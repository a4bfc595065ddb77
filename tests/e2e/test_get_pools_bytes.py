"""GetPools answers from bytes serialised once per state of the pools
(entrypoints/pools_reply.py, entrypoints/registration.py): over a real channel, the reply
is the message the servicer used to build, and a pool change shows in the next one."""

from __future__ import annotations

import grpc
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.entrypoints import convert
from jackpot_grpc.entrypoints.registration import as_is
from jackpot_grpc.entrypoints.server import RunningServer
from testkit.random_refs import random_game_id

GET_POOLS = "/jackpot.v1.JackpotService/GetPools"


async def raw_get_pools(channel: grpc.aio.Channel) -> bytes:
    """GetPools' reply as the bytes on the wire."""
    call = channel.unary_unary(
        GET_POOLS,
        request_serializer=pb.GetPoolsRequest.SerializeToString,
        response_deserializer=None,
    )
    reply: bytes = await call(pb.GetPoolsRequest())
    return reply


async def expected(server: RunningServer) -> pb.GetPoolsResponse:
    """The reply as the servicer built it before it answered in bytes."""
    return pb.GetPoolsResponse(pools=map(convert.pool, await server.service.pools()))


async def test_the_reply_decodes_to_the_message_built_from_the_pools(
    server: RunningServer,
    channel: grpc.aio.Channel,
    stub: jackpot_pb2_grpc.JackpotServiceStub,
) -> None:
    wire = await raw_get_pools(channel)
    assert pb.GetPoolsResponse.FromString(wire) == await expected(server)
    assert await stub.GetPools(pb.GetPoolsRequest()) == await expected(server)
    assert await raw_get_pools(channel) == wire  # nothing moved: the same bytes


async def test_a_pool_change_is_seen_by_the_next_get_pools(
    server: RunningServer,
    channel: grpc.aio.Channel,
    stub: jackpot_pb2_grpc.JackpotServiceStub,
) -> None:
    before = await stub.GetPools(pb.GetPoolsRequest())
    contributed = await stub.Contribute(
        pb.ContributeRequest(game_id=random_game_id(), wager_amount=100_000)
    )
    after = await stub.GetPools(pb.GetPoolsRequest())
    assert [(p.group, p.current_amount) for p in after.pools] == [
        (a.group, a.amount) for a in contributed.pool_amounts
    ]
    assert [p.current_amount for p in after.pools] != [p.current_amount for p in before.pools]
    assert [p.version for p in after.pools] != [p.version for p in before.pools]
    assert after == await expected(server)


def test_a_message_given_to_the_bytes_serializer_is_still_serialised() -> None:
    reply = pb.GetPoolsResponse(pools=[pb.Pool(group=pb.JACKPOT_GROUP_MINOR, current_amount=7)])
    assert as_is(reply) == reply.SerializeToString()
    assert as_is(b"\x01\x02") == b"\x01\x02"
