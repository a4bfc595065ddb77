"""WatchPools over gRPC: a watcher of the hub, its deliveries numbered and written.

Every message carries the stream's next sequence number (the first: resume_after + 1), so
the numbers never skip; pool updates a slow reader missed are counted in
`skipped_updates` instead. A write the reader does not take within `max_lag` seconds cuts
the stream off (WatcherTooSlow): the server never holds more for a reader than the
transport's flow-control window and the hub's bounded queue.
"""

from __future__ import annotations

import asyncio

import grpc
from jackpot.v1 import jackpot_pb2 as pb

from jackpot_grpc.contract.metadata import FORWARDED_FOR
from jackpot_grpc.domain.errors import InvalidArgument, WatcherTooSlow
from jackpot_grpc.domain.model import Group, PoolState
from jackpot_grpc.domain.watch import Hit
from jackpot_grpc.entrypoints import convert
from jackpot_grpc.service.jackpot import JackpotService
from jackpot_grpc.service.watch_hub import Delivery, WatchHub

PoolsKey = tuple[tuple[Group, int], ...]
READY_TIMEOUT = 5.0  # the hub's first read (the ledger's last win) before UNAVAILABLE


def watched_groups(request: pb.WatchPoolsRequest) -> list[Group]:
    groups: list[Group] = []
    for position, value in enumerate(request.groups):
        group = convert.group_from_proto(value)
        if group is None:
            raise InvalidArgument.of(f"groups[{position}]", "must be MINOR, MAJOR or MEGA")
        groups.append(group)
    if request.resume_after < 0:
        raise InvalidArgument.of("resume_after", "must be 0 or a sequence number seen before")
    return groups


def hit(value: Hit) -> pb.PoolHit:
    return pb.PoolHit(
        group=convert.group_to_proto(value.group),
        amount=value.amount,
        won_at=convert.timestamp(value.won_at),
        win_id=value.win_id,
        ledger_seq=value.ledger_seq or 0,
    )


def connection_of(context: grpc.aio.ServicerContext) -> str:
    """What the per-connection cap counts by: the connection, and for a call a gateway
    forwards (x-forwarded-for), the caller it forwards for: a gateway carries the streams
    of many HTTP callers over one connection. (A client that sends its own header only
    spreads its streams over more counts; the total cap and the connection's stream limit
    still bound it.)"""
    forwarded = [str(v) for k, v in context.invocation_metadata() or () if k == FORWARDED_FOR]
    return "|".join([context.peer() or "unknown", *forwarded])


class PoolWatch:
    def __init__(self, service: JackpotService, hub: WatchHub, max_lag: float) -> None:
        self._service = service
        self._hub = hub
        self._max_lag = max_lag
        # Pool messages are built once per state and shared by every watcher.
        self._pools: tuple[PoolsKey, list[pb.Pool]] | None = None

    def _pool_messages(self, pools: list[PoolState]) -> list[pb.Pool]:
        key = tuple((p.group, p.version) for p in pools)
        if self._pools is None or self._pools[0] != key:
            self._pools = (key, [convert.pool(p) for p in pools])
        return self._pools[1]

    def _messages(self, delivery: Delivery) -> list[pb.WatchPoolsResponse]:
        messages = [pb.WatchPoolsResponse(hit=hit(h)) for h in delivery.hits]
        if delivery.pools is not None:
            messages.append(
                pb.WatchPoolsResponse(
                    pools=self._pool_messages(delivery.pools),
                    skipped_updates=delivery.skipped,
                )
            )
        return messages

    async def serve(self, request: pb.WatchPoolsRequest, context: grpc.aio.ServicerContext) -> None:
        groups = watched_groups(request)
        sequence = request.resume_after
        with self._hub.watch(groups, connection_of(context)) as watcher:
            await self._hub.ready(READY_TIMEOUT)
            watcher.start_with(await self._service.pools())
            while True:
                delivery = await watcher.next()
                messages = self._messages(delivery)
                for message in messages:
                    sequence += 1
                    message.sequence = sequence
                    try:
                        await asyncio.wait_for(context.write(message), self._max_lag)
                    except TimeoutError:
                        self._hub.counters.watchers_cut += 1
                        raise WatcherTooSlow(
                            f"this stream took no message for {self._max_lag:g} s; reconnect"
                            " (the new stream starts from the current state)"
                        ) from None
                self._hub.delivered(delivery, len(messages))
