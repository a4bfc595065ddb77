"""Group commit for Contribute: concurrent calls share one transaction.

Callers queue their (already validated) command and wait. One worker takes everything
queued (up to the batch size), applies it in one transaction, and answers each caller
with its own result only after the commit. While a batch commits, the next one forms.
The batch goes to a BatchApplier (JackpotService.contribute_many in the server).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from jackpot_grpc.domain.errors import DomainError, Overloaded, ShuttingDown, Unavailable
from jackpot_grpc.domain.model import ContributeCommand, ContributionResult
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


class ContributionBatcher:
    def __init__(
        self, service: BatchApplier, max_batch: int, max_queue: int, linger: float = 0.0
    ) -> None:
        self._service = service
        self._max_batch = max_batch
        self._linger = linger
        self._queue: asyncio.Queue[Pending] = asyncio.Queue(maxsize=max_queue)
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._applying_since: float | None = None
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
        self._worker = asyncio.create_task(self._run(), name="contribution-batcher")

    async def contribute(self, command: ContributeCommand) -> ContributionResult:
        if self._closed:
            raise ShuttingDown("service is shutting down")
        answer: asyncio.Future[ContributionResult] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(Pending(command, answer))
        except asyncio.QueueFull:
            raise Overloaded("contribution queue is full; retry with backoff") from None
        # If the caller goes away (deadline, cancel), the future is cancelled with it and
        # the worker skips the command: a call whose deadline passed is not executed.
        return await answer

    async def close(self, budget: float = 10.0) -> None:
        """Stop taking calls, answer everything queued, then stop the worker.

        Bounded: what is still queued after `budget` seconds is answered UNAVAILABLE
        (never applied), so shutdown cannot hang on a stuck database.
        """
        self._closed = True
        try:
            await asyncio.wait_for(self._queue.join(), budget)
        except TimeoutError:
            log.error("contribution queue not drained in %.1f s; failing the rest", budget)
        if self._worker is not None:
            self._worker.cancel()
            # Bounded too: on Python 3.11 a cancellation can be lost inside wait_for.
            await asyncio.wait({self._worker}, timeout=1.0)
        left = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        fail_all(left, ShuttingDown("service is shutting down"))

    def _take_batch(self, first: Pending) -> list[Pending]:
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            # Under load (others already queued), wait a moment for more: a bigger batch
            # costs less database work per contribution. A lone caller is served at once.
            if self._linger and not self._queue.empty():
                await asyncio.sleep(self._linger)
            batch = self._take_batch(first)
            try:
                await self._apply([p for p in batch if not p.answer.done()])
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _apply(self, batch: list[Pending]) -> None:
        if not batch:
            return
        self._applying_since = time.monotonic()
        try:
            await self._apply_timed(batch)
        finally:
            self._applying_since = None

    async def _apply_timed(self, batch: list[Pending]) -> None:
        try:
            results = await self._service.contribute_many([p.command for p in batch])
        except DomainError as exc:
            failure: Exception = exc
        except asyncio.CancelledError:
            # Stopped mid-batch (perhaps mid-commit): the outcome is unknown to us, so the
            # callers are told to retry; their idempotency keys settle it exactly once.
            fail_all(batch, Unavailable("service stopped while applying the contribution"))
            raise
        except Exception as exc:  # never leave a caller waiting on an unexpected fault
            log.exception("contribution batch of %d failed", len(batch))
            failure = exc
        else:
            self.batches += 1
            self.batched += len(batch)
            answer_all(batch, results)
            return
        fail_all(batch, failure)
