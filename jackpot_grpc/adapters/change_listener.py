"""One LISTEN connection per server process, open while anyone watches: the database's
change notifications.

Migration 0009 makes every committed change of the pools NOTIFY `jackpot_changes` (payload
`pools` or `wins`). This connection hands each payload to `on_change`, and `connected`
after every (re)connection, when notifications may have been missed and everything must be
read again. A lost connection is reopened with backoff; stop() ends it.

Only WatchPools needs the notifications (GetPools reads its snapshot by its TTL), so the
connection is opened when the first watcher comes and closed IDLE_CLOSE seconds after the
last one left (`want`). Listening with nobody watching cost the event loop about 100 µs
per notification, one per committed batch: some 6 µs of every Contribute (BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from jackpot_grpc.adapters.database import connect_listener
from jackpot_grpc.config import Settings

log = logging.getLogger(__name__)

CHANNEL = "jackpot_changes"
CONNECTED = "connected"  # the payload on_change gets after each (re)connection
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
# Seconds the connection stays open after the last watcher left: a watcher that
# reconnects at once (a client's retry, a rolling restart of its host) finds it open.
IDLE_CLOSE = 30.0


class ChangeListener:
    def __init__(
        self,
        settings: Settings,
        database_url: str,
        on_change: Callable[[str], None],
        *,
        idle_close: float = IDLE_CLOSE,
    ) -> None:
        self._url = database_url
        self._settings = settings
        self._on_change = on_change
        self._idle_close = idle_close
        self._task: asyncio.Task[None] | None = None
        self._closing: asyncio.TimerHandle | None = None
        self._stopped = False

    def want(self, wanted: bool) -> None:
        """Listen (someone watches), or stop listening IDLE_CLOSE seconds from now."""
        if self._closing is not None:
            self._closing.cancel()
            self._closing = None
        if self._stopped:
            return
        if wanted:
            if self._task is None:
                self._task = asyncio.create_task(self._run(), name="change-listener")
        elif self._task is not None:
            self._closing = asyncio.get_running_loop().call_later(self._idle_close, self._close)

    def _close(self) -> None:
        self._closing = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()  # leaving `async with conn` closes the connection

    async def stop(self) -> None:
        self._stopped = True
        if self._closing is not None:
            self._closing.cancel()
        task = self._task
        self._close()
        if task is not None:
            await asyncio.wait({task}, timeout=2.0)

    async def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: reconnect with backoff
                log.warning("change listener lost its connection (%s); reconnecting", exc)
            else:
                backoff = BACKOFF_FIRST
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)

    async def _listen(self) -> None:
        conn = await connect_listener(self._settings, self._url)
        async with conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            self._on_change(CONNECTED)
            async for notify in conn.notifies():
                self._on_change(notify.payload)
