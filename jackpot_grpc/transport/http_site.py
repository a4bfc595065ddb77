"""Serving an aiohttp app on a TCP port: shared by the REST gateway and the health HTTP.

Both listeners face whoever can reach them, so both get the same bounds:

- Request bodies are never inflated: aiohttp's automatic decompression is off, and a body
  with a Content-Encoding is refused 415 before it is read (neither app needs one). A body
  where none is expected, or one over the limit, is refused 413 from its headers.
- A refused body is never read: no lingering (aiohttp would otherwise read and discard up
  to 10 s of it), and the answer says `Connection: close` and closes the connection.
- Idle connections close after HTTP_KEEPALIVE_TIMEOUT. aiohttp has no separate timer for
  reading a request's headers, but its keep-alive timer runs from the moment a connection
  opens (and from the end of each response) and is not reset by incoming bytes, so a
  request whose headers are not complete by then (slowloris) is closed by it too.
- Request line, header size and header count are bounded (aiohttp's parser limits).
- At most HTTP_MAX_CONNECTIONS connections are open at once; one more is answered 503
  and closed at once (the cap may be overshot by one accept batch).
- The listen backlog is as deep as the kernel allows (SOMAXCONN, clamped to
  net.core.somaxconn), not aiohttp's 128: a burst of connections that overflows the accept
  queue is not refused, its handshakes are dropped and retried 1, 3 and 7 s later, so those
  connections would be neither served, nor answered 503, nor timed out until then.
- The access log (the gateway's; the health port keeps none) never records a query string:
  callers put tokens there (jackpot_grpc.observability.access_log).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from jackpot_grpc.config import Settings
from jackpot_grpc.observability.access_log import RedactingAccessLogger
from jackpot_grpc.observability.refusals import Refusals

HTTP_LAYER = "http"
_REFUSED_CONNECTION = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Connection: close\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
)


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 256
    keepalive_timeout: float = 5.0  # also bounds how long a request's headers may take
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 64

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_connections=settings.http.max_connections,
            keepalive_timeout=settings.http.keepalive_timeout,
        )


def body_guard(
    limit_for: Callable[[web.Request], int], refusals: Refusals | None = None
) -> Middleware:
    """415 for any Content-Encoding, 413 for a body over `limit_for(request)` bytes (0: no
    body expected), decided from the headers alone, before a byte of body is read."""

    def refuse(reason: str) -> None:
        if refusals is not None:
            refusals.count(HTTP_LAYER, reason)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            refuse("content_encoding")
            raise web.HTTPUnsupportedMediaType(
                text=f"Content-Encoding {encoding!r} is not accepted: send the body as is"
            )
        limit = limit_for(request)
        length = request.content_length
        if request.body_exists and limit == 0:
            refuse("unexpected_body")
            raise web.HTTPRequestEntityTooLarge(max_size=0, actual_size=length or 0)
        if length is not None and length > limit:
            refuse("body_too_large")
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length)
        return await handler(request)

    return guard


@web.middleware
async def close_if_unread(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost middleware: a response to a request whose body was left unread (a
    refusal) closes the connection instead of reading the rest of the body."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # raised, not returned: aiohttp answers with it
        if request.body_exists and not request.content.is_eof():
            exc.force_close()
        raise
    if request.body_exists and not request.content.is_eof():
        response.force_close()
    return response


class _RefusedConnection:
    """What a connection over the cap gets: a 503 and a close, no parser, no task."""

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport; not an isinstance test: uvloop's does not subclass asyncio's.
        cast(asyncio.WriteTransport, transport).write(_REFUSED_CONNECTION)
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        return None

    def data_received(self, data: bytes) -> None:
        return None

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        return None

    def resume_writing(self) -> None:
        return None


class CappedSite(web.TCPSite):
    """A TCPSite that refuses connections beyond `max_connections`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        refusals: Refusals | None,
        reuse_port: bool | None,
    ) -> None:
        super().__init__(runner, host, port, reuse_port=reuse_port, backlog=socket.SOMAXCONN)
        self._max_connections = max_connections
        self._refusals = refusals

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers with the runner (TCPSite.start binds)
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.BaseProtocol:
            if len(server.connections) >= self._max_connections:
                if self._refusals is not None:
                    self._refusals.count(HTTP_LAYER, "connection_cap")
                return _RefusedConnection()  # type: ignore[return-value]
            return server()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            protocol,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


async def start_site(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float,
    limits: HttpLimits | None = None,
    refusals: Refusals | None = None,
    reuse_port: bool = False,
    access_log: bool = True,
) -> tuple[web.AppRunner, int]:
    """Listen on host:port (0: any free port; "[::1]" or "::1"); the runner and bound port.

    The runner is cleaned up if the bind fails, so nothing is left half open.
    """
    limits = limits or HttpLimits()
    handler_args: dict[str, Any] = {
        "keepalive_timeout": limits.keepalive_timeout,
        "lingering_time": 0,
        "auto_decompress": False,
        "max_line_size": limits.max_line_size,
        "max_field_size": limits.max_field_size,
        "max_headers": limits.max_headers,
    }
    runner = (
        web.AppRunner(
            app,
            shutdown_timeout=shutdown_timeout,
            access_log_class=RedactingAccessLogger,  # no query string (observability.access_log)
            **handler_args,
        )
        if access_log
        else web.AppRunner(app, shutdown_timeout=shutdown_timeout, access_log=None, **handler_args)
    )
    await runner.setup()
    try:
        site = CappedSite(
            runner,
            host.strip("[]"),
            port,
            max_connections=limits.max_connections,
            refusals=refusals,
            reuse_port=reuse_port or None,
        )
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound: int = runner.addresses[0][1]
    return runner, bound
