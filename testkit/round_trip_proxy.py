"""A TCP proxy in front of PostgreSQL that counts round trips: a client message after the
server last spoke (or the first one of a connection) starts a new one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class RoundTripProxy:
    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self.round_trips = 0
        self.open_connections = 0
        # Round trips of each connection, in the order they were opened.
        self.per_connection: list[int] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._relay(client_r, client_w)
        except asyncio.CancelledError:
            client_w.close()  # the proxy is closing: end quietly
        finally:
            self._tasks.discard(task)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self._upstream)
        self.open_connections += 1
        index = len(self.per_connection)
        self.per_connection.append(0)
        turn = {"client": False}

        async def pump(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_client: bool
        ) -> None:
            try:
                while chunk := await reader.read(65536):
                    if from_client and not turn["client"]:
                        self.round_trips += 1
                        self.per_connection[index] += 1
                    turn["client"] = from_client
                    writer.write(chunk)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    writer.close()

        try:
            await asyncio.gather(pump(client_r, server_w, True), pump(server_r, client_w, False))
        finally:
            self.open_connections -= 1


@contextlib.asynccontextmanager
async def round_trip_proxy(host: str, port: int) -> AsyncIterator[RoundTripProxy]:
    proxy = RoundTripProxy(host, port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
