"""The edge balances over several server processes and drains one that turns NOT_SERVING:
two real `jackpot serve` processes behind HAProxy with the generated config."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import grpc
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from testkit.edge import haproxy_in_front
from testkit.processes import serving

DRAIN = "3"  # seconds a stopping server stays up, NOT_SERVING, before it closes


async def pools(stub: jackpot_pb2_grpc.JackpotServiceStub) -> str:
    try:
        await stub.GetPools(pb.GetPoolsRequest(), timeout=5)
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)
    return "OK"


async def test_calls_spread_over_servers_and_a_draining_one_is_taken_out(
    database_url: str, tmp_path: Path
) -> None:
    env = {"JACKPOT_DRAIN_DELAY": DRAIN, "JACKPOT_SHUTDOWN_GRACE": "2"}
    with (
        serving(database_url, tmp_path / "s1", **env) as first,
        serving(database_url, tmp_path / "s2", **env) as second,
        haproxy_in_front([first, second], tmp_path / "edge") as edge,
    ):
        async with grpc.aio.insecure_channel(edge.target) as channel:
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
            spread = Counter(await asyncio.gather(*(pools(stub) for _ in range(64))))
            assert spread == {"OK": 64}, spread
            served = {name: int(row["stot"]) for name, row in edge.server_stats().items()}
            assert served["s1"] > 0 and served["s2"] > 0, served
            # The first server stops: NOT_SERVING for DRAIN seconds, then it closes.
            first.signal(signal.SIGTERM)
            answers: Counter[str] = Counter()
            loop = asyncio.get_running_loop()
            end = loop.time() + float(DRAIN) + 3
            while loop.time() < end:
                answers.update(await asyncio.gather(*(pools(stub) for _ in range(8))))
                await asyncio.sleep(0.05)
            assert first.wait(10) == 0
            assert set(answers) == {"OK"}, answers  # no call lost while it drained
            stats = edge.server_stats()
            assert stats["s1"]["status"].startswith("DOWN"), stats["s1"]
            assert stats["s2"]["status"] == "UP", stats["s2"]
