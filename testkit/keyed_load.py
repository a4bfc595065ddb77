"""Closed-loop keyed Contribute callers that retry each key until it is acknowledged, a
grpc health watcher beside them, and what a caller may check afterwards: every
acknowledged key re-sent replays its first answer.

Used by the failover suite (tests/failover): a fault is injected while `KeyedLoad` runs;
the calls, the health samples and the re-sent answers are the evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from testkit.calls import FAST_RECONNECT, Call, answer, contribute_once
from testkit.grpc_health import health_status_async

GAME = "reliability"
# What a caller may see while the database fails over: refused (UNAVAILABLE, retry with
# the same key) or out of time (DEADLINE_EXCEEDED, same). Anything else is a defect.
RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


@dataclass
class KeyedLoad:
    """`callers` closed-loop callers, keys `<prefix>-<n>`; each caller retries its key
    (after `retry_pause`) until acknowledged, then takes the next one."""

    target: str
    prefix: str
    callers: int
    call_deadline: float = 5.0
    retry_pause: float = 0.1
    calls: list[Call] = field(default_factory=list)
    health: list[tuple[float, int | None]] = field(default_factory=list)
    acknowledged: int = 0
    gave_up: list[str] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)  # id(Call) -> ErrorInfo reason
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _progress: asyncio.Event = field(default_factory=asyncio.Event)  # set at each ack
    _hard_stop: float = float("inf")

    async def run(self, limit_s: float) -> None:
        """Run until `stop()` (each caller then finishes its current key), `limit_s` at
        most; a key not acknowledged by then is listed in `gave_up`."""
        self._hard_stop = time.monotonic() + limit_s
        async with (
            grpc.aio.insecure_channel(self.target, options=FAST_RECONNECT) as channel,
            grpc.aio.insecure_channel(self.target, options=FAST_RECONNECT) as health_channel,
        ):
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
            watcher = asyncio.create_task(self._watch_health(health_channel))
            try:
                await asyncio.gather(*(self._caller(stub, n) for n in range(self.callers)))
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    def stop(self) -> None:
        self._stop.set()

    async def _caller(self, stub: jackpot_pb2_grpc.JackpotServiceStub, number: int) -> None:
        for i in range(number, 10**9, self.callers):
            if self._stop.is_set():
                return
            key = f"{self.prefix}-{i}"
            while True:
                call = await self._attempt(stub, key, 100 + i)
                self.calls.append(call)
                if call.ok:
                    self.acknowledged += 1
                    self._progress.set()
                    break
                if call.code not in RETRYABLE or time.monotonic() > self._hard_stop:
                    self.gave_up.append(key)
                    return
                await asyncio.sleep(self.retry_pause)

    async def _attempt(
        self, stub: jackpot_pb2_grpc.JackpotServiceStub, key: str, wager: int
    ) -> Call:
        """One Contribute call (as testkit.calls.contribute_once); a refusal's ErrorInfo
        reason goes to `reasons`, by the Call's id."""
        started = time.monotonic()
        request = pb.ContributeRequest(game_id=GAME, wager_amount=wager, idempotency_key=key)
        try:
            response = await stub.Contribute(request, timeout=self.call_deadline)
        except grpc.aio.AioRpcError as exc:
            call = Call(key, wager, started, time.monotonic(), exc.code().name, None, exc.details())
            self.reasons[id(call)] = refusal_reason(exc)
            return call
        return Call(key, wager, started, time.monotonic(), "OK", response)

    def reason(self, call: Call) -> str:
        """The ErrorInfo reason of a failed call ("" when it carried none)."""
        return self.reasons.get(id(call), "")

    async def _watch_health(self, channel: grpc.aio.Channel) -> None:
        while True:
            self.health.append((time.monotonic(), await health_status_async(channel)))
            await asyncio.sleep(0.1)

    async def wait_acknowledged(self, count: int) -> None:
        """Until `count` keys are acknowledged (the caller bounds it: asyncio.timeout)."""
        while self.acknowledged < count:
            self._progress.clear()
            await self._progress.wait()

    async def wait_first_ok_after(self, moment: float) -> Call:
        """The first acknowledged call started at or after `moment` (monotonic); the
        caller bounds the wait (asyncio.timeout)."""
        while True:
            done = [c for c in self.calls if c.ok and c.started >= moment]
            if done:
                return min(done, key=lambda c: c.ended)
            await asyncio.sleep(0.05)

    def first_answers(self) -> dict[str, Call]:
        """Each acknowledged key's first acknowledged call."""
        first: dict[str, Call] = {}
        for call in sorted((c for c in self.calls if c.ok), key=lambda c: c.ended):
            assert call.key is not None
            first.setdefault(call.key, call)
        return first

    def max_ack_gap(self, start: float, end: float) -> float:
        """The longest time between consecutive acknowledgements in [start, end]."""
        ends = sorted(c.ended for c in self.calls if c.ok and start <= c.ended <= end)
        marks = [start, *ends, end]
        return max(b - a for a, b in itertools.pairwise(marks))


async def resend(target: str, first: Iterable[Call], deadline_s: float = 10.0) -> list[Call]:
    """Every acknowledged key sent again, as its first call: the answers (each should be
    OK, `replayed`, and the first answer's content)."""
    calls = list(first)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
        semaphore = asyncio.Semaphore(16)

        async def again(call: Call) -> Call:
            async with semaphore:
                return await contribute_once(stub, call.key, call.wager, deadline_s=deadline_s)

        return list(await asyncio.gather(*(again(c) for c in calls)))


def refusal_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason a refused call carries, "" when none (a client-side deadline)."""
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def replay_problems(first: dict[str, Call], again: Iterable[Call]) -> list[str]:
    """What the re-sent answers got wrong: not OK, not a replay, or not the first answer."""
    problems = []
    for call in again:
        assert call.key is not None
        original = first[call.key].response
        assert original is not None
        if not call.ok or call.response is None:
            problems.append(f"{call.key}: re-sent, got {call.code} {call.details}")
        elif not call.response.replayed:
            problems.append(f"{call.key}: re-sent, applied again (not a replay)")
        elif answer(call.response) != answer(original):
            problems.append(f"{call.key}: re-sent, a different answer than the first")
    return problems
