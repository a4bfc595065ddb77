"""Before a load test writes: does the ledger it would write into already hold rows?

A load test's contributions are real money in the ledger it reaches. Into a ledger that
holds contributions or wins (a shared database: blue-green, staging, production) it writes
only when told to (`--allow-writes`); a load that sends its writes with validate_only, or
reads only, never needs to ask. The service answers (GetStatistics), so the ledger checked
is the one the target writes, never this shell's DATABASE_URL.
"""

from __future__ import annotations

import grpc
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.ops.grpc_client import channel, describe_error
from jackpot_grpc.ops.ops_error import OpsError

WAYS_OUT = (
    "use a read-only --kind (get_pools, health), --validate-only (every check, nothing"
    " written), or --allow-writes to write real contributions anyway"
)


async def ledger_rows(settings: Settings, target: str, rpc_timeout: float) -> tuple[int, int]:
    """(contributions, wins) in the ledger `target` serves."""
    async with channel(settings, target) as chan:
        stub = jackpot_pb2_grpc.JackpotServiceStub(chan)
        stats = await stub.GetStatistics(pb.GetStatisticsRequest(), timeout=rpc_timeout)
    return int(stats.total_contribution_count), int(stats.total_win_count)


async def refuse_writes_into_a_used_ledger(
    settings: Settings, target: str, rpc_timeout: float
) -> None:
    """OpsError unless `target`'s ledger holds no contribution and no win."""
    try:
        contributions, wins = await ledger_rows(settings, target, rpc_timeout)
    except grpc.aio.AioRpcError as exc:
        raise OpsError(
            f"cannot tell whether the ledger of {target} holds rows (GetStatistics:"
            f" {describe_error(exc)}); a load test writes there only into an empty ledger:"
            f" {WAYS_OUT}"
        ) from exc
    if contributions or wins:
        raise OpsError(
            f"the ledger of {target} holds {contributions} contributions and {wins} wins:"
            f" a load test would add real contributions to it; {WAYS_OUT}"
        )
