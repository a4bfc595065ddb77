"""A JackpotService servicer for tests that stand in for part of the service.

mypy-protobuf's stub marks every rpc of `JackpotServiceServicer` abstract, so a test's
servicer that answers only the rpcs it needs cannot be instantiated under mypy, although
grpc's generated base answers the others UNIMPLEMENTED at run time. This base says the same
thing to mypy: subclass it and define only the rpcs the test needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from jackpot.v1 import jackpot_pb2_grpc


# Any, so that a subclass's rpc may take and return its own message types.
async def _unimplemented(self: object, request: Any, context: Any) -> Any:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of this test's servicer")
    raise AssertionError("abort returned")  # abort raises; this line is never reached


async def _unimplemented_stream(self: object, request: Any, context: Any) -> AsyncIterator[Any]:
    await _unimplemented(self, request, context)
    yield  # never reached: the yield makes this a server-streaming handler


class PartialJackpotServicer(jackpot_pb2_grpc.JackpotServiceServicer):
    """Every rpc answers UNIMPLEMENTED until a subclass defines it."""

    Contribute = _unimplemented
    ContributeBatch = _unimplemented
    Win = _unimplemented
    GetPools = _unimplemented
    GetStatistics = _unimplemented
    GetConfig = _unimplemented
    GetLedgerProof = _unimplemented
    UpdateConfig = _unimplemented
    ListWins = _unimplemented
    SuspendPool = _unimplemented
    ResumePool = _unimplemented
    WatchPools = _unimplemented_stream
