"""GetPools' reply, serialised once per state of the pools.

Pools change far less often than they are read: the reply is built and serialised when a
pool's version moves, and every GetPools in between sends the same bytes (its handler's
serializer passes them through: entrypoints/registration.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from jackpot.v1 import jackpot_pb2 as pb

from jackpot_grpc.domain.model import PoolState
from jackpot_grpc.entrypoints import convert


class PoolsReply:
    def __init__(self) -> None:
        self._versions: tuple[int, ...] | None = None
        self._serialised = b""

    def serialised(self, pools: Sequence[PoolState]) -> bytes:
        """The GetPoolsResponse of `pools`, serialised; rebuilt only when a version moved."""
        versions = tuple(p.version for p in pools)
        if versions != self._versions:
            reply = pb.GetPoolsResponse(pools=map(convert.pool, pools))
            self._serialised = reply.SerializeToString()
            self._versions = versions
        return self._serialised
