"""The gateway never opens a server in open mode to the network.

A server with no clients configured lets every caller in, and therefore listens on loopback
only (jackpot_grpc.security.open_mode). A gateway in front of it listening on a wider address would
undo that, whatever the gateway's own settings say. So a gateway listening beyond loopback
(without JACKPOT_ALLOW_OPEN=1) asks the server, at start and after each reconnect, with a
call that needs a role and carries no caller's credentials (GetConfig, a read; with the
gateway's own token when it has one, whose role may call nothing): a closed server refuses
it (UNAUTHENTICATED or PERMISSION_DENIED); one that answers is open. Until a server
has refused it, the gateway forwards nothing (503); a server found open at start stops the
gateway from starting (OpenServerError), and one found open later makes it answer 503
until a later probe finds it closed.

The verdict is per channel: behind a balanced target a reconnect of the channel as a whole
asks again, one replica joining a healthy set does not. Give every replica the same
clients file.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Sequence

import grpc
from jackpot.v1 import jackpot_pb2

from jackpot_grpc.gateway.http_errors import GatewayError

log = logging.getLogger(__name__)

PROBE_METHOD = "/jackpot.v1.JackpotService/GetConfig"
REFUSED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
OPEN_MESSAGE = (
    "the gRPC server answers calls without credentials (open mode: no clients configured),"
    " and this gateway listens beyond loopback (REST_HOST); it forwards nothing until the"
    " server requires credentials. Configure clients on the server (docs/SECURITY.md),"
    " listen on 127.0.0.1, or set JACKPOT_ALLOW_OPEN=1 to run open anyway"
)


class OpenServerError(RuntimeError):
    """The server the gateway fronts runs open, and the gateway listens beyond loopback."""


class Verdict(enum.Enum):
    UNKNOWN = "unknown"  # not asked yet, or no clear answer (server unreachable)
    CLOSED = "closed"
    OPEN = "open"


async def probe(
    channel: grpc.aio.Channel,
    deadline: float,
    *,
    wait: bool = False,
    metadata: Sequence[tuple[str, str]] = (),
) -> Verdict:
    """Ask the server once, with no caller's credentials, for something that needs a role.
    `metadata`: the gateway's own token as `authorization`, whose role may call nothing
    (PERMISSION_DENIED, which does not count against the gateway's address as an
    uncredentialed call's UNAUTHENTICATED does)."""
    call = channel.unary_unary(
        PROBE_METHOD,
        request_serializer=jackpot_pb2.GetConfigRequest.SerializeToString,
        response_deserializer=jackpot_pb2.GetConfigResponse.FromString,
    )
    try:
        await call(
            jackpot_pb2.GetConfigRequest(),
            timeout=deadline,
            wait_for_ready=wait,
            metadata=tuple(metadata),
        )
    except grpc.aio.AioRpcError as error:
        if error.code() in REFUSED:
            return Verdict.CLOSED
        # Unreachable, overloaded...: asked again soon (logged once, by the guard).
        log.debug("could not ask the gRPC server whether it needs credentials: %s", error)
        return Verdict.UNKNOWN
    return Verdict.OPEN


class OpenServerGuard:
    """Holds the verdict on the channel's server and keeps it current."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        probe_timeout: float = 2.0,
        retry_seconds: float = 2.0,
        wait_seconds: float = 5.0,
    ) -> None:
        self._channel = channel
        self._metadata = metadata
        self._probe_timeout = probe_timeout
        self._retry_seconds = retry_seconds
        self._wait_seconds = wait_seconds
        self._closed = asyncio.Event()
        self.verdict = Verdict.UNKNOWN
        self.probes = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self, first_wait: float) -> None:
        """Ask once (waiting up to `first_wait` s for the server to come up), then keep
        watching. OpenServerError if the server is open; unreachable is not an error yet."""
        self._record(await self._ask(first_wait, wait=True))
        if self.verdict is Verdict.OPEN:
            raise OpenServerError(f"refusing to start: {OPEN_MESSAGE}")
        if self.verdict is Verdict.UNKNOWN:
            log.warning(
                "the gRPC server did not answer within %.0f s: forwarding nothing until it"
                " shows that it requires credentials",
                first_wait,
            )
        self._task = asyncio.create_task(self._watch(), name="open-server-guard")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def admit(self) -> None:
        """Return when the server is known to need credentials; else GatewayError (503)."""
        if self.verdict is Verdict.CLOSED and not self._connected():
            self._record(Verdict.UNKNOWN)  # the connection that was asked is gone
        if self.verdict is Verdict.UNKNOWN:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._wait_seconds):
                    await self._closed.wait()
        if self.verdict is Verdict.CLOSED:
            return
        if self.verdict is Verdict.OPEN:
            raise GatewayError(grpc.StatusCode.UNAVAILABLE, OPEN_MESSAGE)
        raise GatewayError(
            grpc.StatusCode.UNAVAILABLE,
            "service unavailable: the gRPC server has not yet shown that it requires credentials",
        )

    def _connected(self) -> bool:
        return self._channel.get_state(try_to_connect=False) is grpc.ChannelConnectivity.READY

    async def _ask(self, deadline: float, *, wait: bool = False) -> Verdict:
        self.probes += 1
        return await probe(self._channel, deadline, wait=wait, metadata=self._metadata)

    def _record(self, verdict: Verdict) -> None:
        if verdict is Verdict.OPEN and self.verdict is not Verdict.OPEN:
            log.error("%s", OPEN_MESSAGE)
        if verdict is Verdict.CLOSED and self.verdict is not Verdict.CLOSED:
            log.info("the gRPC server requires credentials: forwarding calls")
        self.verdict = verdict
        if verdict is Verdict.CLOSED:
            self._closed.set()
        else:
            self._closed.clear()

    async def _watch(self) -> None:
        """Ask again once reconnected after the channel left READY, and every
        retry_seconds while unsure or open."""
        last = self._channel.get_state(try_to_connect=False)
        while True:
            if self.verdict is not Verdict.CLOSED:
                self._record(await self._ask(self._probe_timeout))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(
                    None if self.verdict is Verdict.CLOSED else self._retry_seconds
                ):
                    await self._channel.wait_for_state_change(last)
            last = self._channel.get_state(try_to_connect=False)
            if self.verdict is Verdict.CLOSED and last is not grpc.ChannelConnectivity.READY:
                self._record(Verdict.UNKNOWN)  # disconnected: maybe to another server next
