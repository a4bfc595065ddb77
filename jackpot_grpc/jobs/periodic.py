"""A background loop that runs an action every `interval` seconds until stopped (or after
the delay a callable `interval` names after each run: a backoff).

Stopping sets an event instead of cancelling: a cancellation that lands while the action
is inside `asyncio.wait_for` can be lost on Python 3.11 (the loop then runs on and the
stop waits forever). Cancellation stays as the last resort after `budget` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any


class Periodic:
    def __init__(
        self,
        name: str,
        action: Callable[[], Awaitable[Any]],
        interval: float | Callable[[], float],
    ) -> None:
        self._name = name
        self._action = action
        self._interval = interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self._action()
            delay = self._interval() if callable(self._interval) else self._interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def stop(self, budget: float = 5.0) -> None:
        if self._task is None:
            return
        task, self._task = self._task, None
        self._stopping.set()
        done, _ = await asyncio.wait({task}, timeout=budget)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
