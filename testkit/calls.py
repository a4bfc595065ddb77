"""Contribute calls as a caller sees them: the attempt, its outcome, and its answer."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"  # 32+ characters, as required
ADMIN_METADATA = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
# Never acceptable from this service, whatever the input or the fault.
FORBIDDEN_CODES = frozenset({"UNKNOWN", "INTERNAL"})
# A client that talks to a restarting server wants to notice it is back quickly.
FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason a refused call carries (domain jackpot.v1)."""
    status: status_pb2.Status | None = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            assert info.domain == "jackpot.v1"
            return str(info.reason)
    raise AssertionError(f"no ErrorInfo in {error}")


@dataclass
class Call:
    """One attempt of one Contribute call, as the caller saw it."""

    key: str | None
    wager: int
    started: float
    ended: float
    code: str
    response: pb.ContributeResponse | None = None
    details: str = ""

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    @property
    def latency(self) -> float:
        return self.ended - self.started


async def contribute_once(
    stub: jackpot_pb2_grpc.JackpotServiceStub,
    key: str | None,
    wager: int,
    *,
    game: str = "reliability",
    deadline_s: float = 30.0,
) -> Call:
    started = time.monotonic()
    request = pb.ContributeRequest(game_id=game, wager_amount=wager, idempotency_key=key or "")
    try:
        response = await stub.Contribute(request, timeout=deadline_s)
    except grpc.aio.AioRpcError as exc:
        return Call(key, wager, started, time.monotonic(), exc.code().name, None, exc.details())
    return Call(key, wager, started, time.monotonic(), "OK", response)


def amounts(response: pb.ContributeResponse) -> tuple[int, int, int]:
    by_group = {c.group: c.amount for c in response.contributions}
    return (
        by_group.get(pb.JACKPOT_GROUP_MINOR, 0),
        by_group.get(pb.JACKPOT_GROUP_MAJOR, 0),
        by_group.get(pb.JACKPOT_GROUP_MEGA, 0),
    )


def answer(response: pb.ContributeResponse) -> bytes:
    """The first answer for a key: everything but the `replayed` flag."""
    copy = pb.ContributeResponse()
    copy.CopyFrom(response)
    copy.replayed = False
    return copy.SerializeToString(deterministic=True)


def status_codes(codes: Iterable[str]) -> dict[str, int]:
    """How many times each status code was seen, by name."""
    counts: dict[str, int] = defaultdict(int)
    for code in codes:
        counts[code] += 1
    return dict(sorted(counts.items()))
