"""Group commit for Contribute: concurrent calls share one transaction, on its own thread.

The event loop only queues each caller's (already validated) command with its future; one
thread takes everything queued (up to the batch size), applies it in one transaction on its
own blocking connection (adapters.batch_connection), and once per batch hands the outcome
back to the loop with one `call_soon_threadsafe`. There the snapshot and metrics follow the
commit and every caller's future is resolved: no caller is answered before its batch's
COMMIT was acknowledged. While a batch commits, the next one forms in the queue.

DirectContributor (JACKPOT_BATCHING=off, for comparison) applies each call on its own,
through JackpotService.contribute_many, the path ContributeBatch and validate_only take.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from jackpot_grpc.adapters import contribution_store as store
from jackpot_grpc.adapters.unit_of_work import KeyTaken
from jackpot_grpc.domain.errors import DomainError, Overloaded, ShuttingDown, Unavailable
from jackpot_grpc.domain.model import ContributeCommand, ContributionResult, ScopedKey
from jackpot_grpc.runtime.thread_names import name_os_thread
from jackpot_grpc.service.jackpot import AppliedBatch, BatchPlanner, JackpotService
from jackpot_grpc.service.pending import Pending, answer_all, fail_all
from jackpot_grpc.service.ports import BatchApplier

log = logging.getLogger(__name__)


class Contributor(Protocol):
    async def contribute(self, command: ContributeCommand) -> ContributionResult: ...

    async def close(self) -> None: ...


class DirectContributor:
    """No batching: one transaction per call (JACKPOT_BATCHING=off, for comparison)."""

    def __init__(self, service: BatchApplier, max_in_flight: int) -> None:
        self._service = service
        self._max_in_flight = max_in_flight
        self._in_flight = 0

    async def contribute(self, command: ContributeCommand) -> ContributionResult:
        if self._in_flight >= self._max_in_flight:
            raise Overloaded("too many contributions in flight; retry with backoff")
        self._in_flight += 1
        try:
            (result,) = await self._service.contribute_many([command])
            if isinstance(result, DomainError):
                raise result
            return result
        finally:
            self._in_flight -= 1

    async def close(self) -> None:
        return None


class BatchExecutor(Protocol):
    """Runs one planned batch in one transaction and returns after its commit
    (adapters.batch_connection.BatchConnection)."""

    def contribute(self, keys: Sequence[ScopedKey], plan: store.Planner) -> store.Recorded: ...

    def close(self) -> None: ...


BATCH_THREAD_NAME = "jackpot-batch"  # its name for the OS (top -H, the bench's CPU per thread)
_STOP = None  # queued by close(): the thread ends after everything queued before it
LINGER_STEPS = 8  # the linger is waited in steps; a step that brings nothing ends it


class ContributionBatcher:
    def __init__(
        self,
        service: JackpotService,
        executor: BatchExecutor,
        max_batch: int,
        max_queue: int,
        linger: float = 0.0,
    ) -> None:
        self._service = service
        self._executor = executor
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._linger = linger
        self._queue: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._applying: list[Pending] = []  # the batch the thread is applying now
        self._applying_since: float | None = None  # monotonic: when it was taken
        self._closed = False
        self.batches = 0
        self.batched = 0

    @property
    def waiting(self) -> int:
        """Calls queued for the next batch (not the one being applied)."""
        return self._queue.qsize()

    def in_flight_age(self) -> float | None:
        """Seconds the batch being applied has been in flight (None: none is)."""
        since = self._applying_since
        return None if since is None else time.monotonic() - since

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="contribution-batcher", daemon=True)
        self._thread.start()

    async def contribute(self, command: ContributeCommand) -> ContributionResult:
        if self._closed or self._loop is None:
            raise ShuttingDown("service is shutting down")
        if self._queue.qsize() >= self._max_queue:
            raise Overloaded("contribution queue is full; retry with backoff")
        answer: asyncio.Future[ContributionResult] = self._loop.create_future()
        self._queue.put(Pending(command, answer))
        # A caller that goes away (deadline, cancel) cancels its future; the thread skips
        # a command whose future is done when its batch is taken.
        return await answer

    async def close(self, budget: float = 10.0) -> None:
        """Stop taking calls, answer everything queued, then stop the thread.

        Bounded: if the thread is still busy after `budget` seconds (a stuck database), the
        batch it is applying is answered UNAVAILABLE (its outcome is unknown: keys settle
        it) and whatever is queued behind it SHUTTING_DOWN (never applied).
        """
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(thread.join, budget)
            await asyncio.sleep(0)  # the last batch's answers, scheduled by the thread
            if thread.is_alive():
                log.error("contribution batch not finished in %.1f s; failing the rest", budget)
                fail_all(self._applying, Unavailable("service stopped while applying the batch"))
            else:
                self._executor.close()
        left: list[Pending] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                left.append(item)
        fail_all(left, ShuttingDown("service is shutting down"))

    # --- on the thread -------------------------------------------------------------------

    def _run(self) -> None:
        name_os_thread(BATCH_THREAD_NAME)
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch, stopping = self._take(first)
            if self._linger and len(batch) > 1 and not stopping:
                stopping = self._grow(batch)
            live = [p for p in batch if not p.answer.done()]
            if live:
                self._applying, self._applying_since = live, time.monotonic()
                outcome = self._apply([p.command for p in live])
                self._applying_since = None
                self._answer(live, outcome)
                self._applying = []

    def _grow(self, batch: list[Pending]) -> bool:
        """Under load (others were queued with the first), wait for more in short steps
        while each step brings more, up to the linger: a bigger batch costs less per
        contribution, and the wait ends as soon as the queue stops filling. A lone caller
        is never delayed. Returns whether close() was queued meanwhile."""
        deadline = time.monotonic() + self._linger
        step = self._linger / LINGER_STEPS
        while len(batch) < self._max_batch and time.monotonic() < deadline:
            time.sleep(step)
            more, stopping = self._take(None, len(batch))
            batch += more
            if stopping or not more:
                return stopping
        return False

    def _take(self, first: Pending | None, have: int = 0) -> tuple[list[Pending], bool]:
        """Everything queued now, up to the batch size; and whether close() was queued."""
        batch = [] if first is None else [first]
        while have + len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _apply(self, commands: list[ContributeCommand]) -> AppliedBatch | Exception:
        try:
            try:
                planner = BatchPlanner(commands)
                return planner.outcome(self._executor.contribute(planner.keys, planner))
            except KeyTaken:  # another writer took a key first: again, to find its row
                planner = BatchPlanner(commands)
                return planner.outcome(self._executor.contribute(planner.keys, planner))
        except Exception as exc:  # every caller is answered, whatever happened
            if not isinstance(exc, (Unavailable, Overloaded)):
                log.exception("contribution batch of %d failed", len(commands))
            return exc

    def _answer(self, batch: list[Pending], outcome: AppliedBatch | Exception) -> None:
        assert self._loop is not None
        # RuntimeError: the loop is gone (the process is exiting), nobody waits.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._resolve, batch, outcome)

    # --- back on the event loop ----------------------------------------------------------

    def _resolve(self, batch: list[Pending], outcome: AppliedBatch | Exception) -> None:
        if isinstance(outcome, Exception):
            fail_all(batch, outcome)
            return
        results = self._service.committed(outcome)
        self.batches += 1
        self.batched += len(batch)
        answer_all(batch, results)
