"""A first end-to-end check that the fixtures give a real server on a real database."""

from __future__ import annotations

from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc


async def test_contribute_moves_every_pool(stub: jackpot_pb2_grpc.JackpotServiceStub) -> None:
    before = await stub.GetPools(pb.GetPoolsRequest())
    reply = await stub.Contribute(pb.ContributeRequest(game_id="slots", wager_amount=1000))
    after = await stub.GetPools(pb.GetPoolsRequest())
    assert reply.total_contribution == sum(c.amount for c in reply.contributions) == 10
    moved = [
        a.current_amount - b.current_amount for a, b in zip(after.pools, before.pools, strict=True)
    ]
    assert moved == [c.amount for c in reply.contributions]
