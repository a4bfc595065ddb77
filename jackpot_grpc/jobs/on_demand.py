"""Expensive work that anyone may ask for, done at most once per interval and shared.

`/health/jackpot?audit=now` scans the whole ledger and `/metrics?period=30d` reads a month
of history. Fifty callers asking at once must cost one run, not fifty, and a caller asking
in a loop must not cost one run per request:

- while a run is under way, every caller waits for that run and gets its result ("shared");
- within `interval` seconds after a run started, callers get its result (or its failure)
  without a new run ("recent"), with the time it was taken so they can see its age;
- otherwise the caller starts a run ("ran").

A caller that goes away (client disconnect, timeout) never cancels the shared run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
How = Literal["ran", "shared", "recent"]


@dataclass(frozen=True)
class Outcome(Generic[T]):
    value: T
    how: How
    at: float  # wall-clock time the run finished


class OnDemand(Generic[T]):
    def __init__(
        self,
        run: Callable[[], Awaitable[T]],
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run = run
        self._interval = interval
        self._clock = clock
        self._task: asyncio.Task[T] | None = None
        self._started: float | None = None  # clock() when the last run started
        self._done: tuple[T | None, BaseException | None, float] | None = None
        self.runs = 0

    async def get(self) -> Outcome[T]:
        if self._task is not None:
            return await self._wait(self._task, "shared")
        if (
            self._done is not None
            and self._started is not None
            and self._clock() - self._started < self._interval
        ):
            value, error, at = self._done
            if error is not None:
                raise error
            return Outcome(value, "recent", at)  # type: ignore[arg-type]
        self._started = self._clock()
        self.runs += 1
        self._task = asyncio.create_task(self._run_and_keep())
        # Its failure is kept for the callers; no "exception never retrieved" if none waits.
        self._task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await self._wait(self._task, "ran")

    async def _run_and_keep(self) -> T:
        try:
            value = await self._run()
        except Exception as exc:
            self._done = (None, exc, time.time())
            raise
        finally:
            self._task = None
        self._done = (value, None, time.time())
        return value

    async def _wait(self, task: asyncio.Task[T], how: How) -> Outcome[T]:
        value = await asyncio.shield(task)
        assert self._done is not None
        return Outcome(value, how, self._done[2])
