"""A queued Contribute call and how a batch answers its callers (service/batcher.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from jackpot_grpc.domain.model import ContributeCommand, ContributionResult


@dataclass
class Pending:
    command: ContributeCommand
    answer: asyncio.Future[ContributionResult]


def answer_all(batch: Sequence[Pending], results: Sequence[ContributionResult | Exception]) -> None:
    """Each caller its own result, after the batch committed. Calls batched together follow
    ContributeBatch's rules: a key repeated with the same request replays the first, with
    another request fails that call alone (its result is the error). A caller that gave up
    meanwhile is skipped."""
    for pending, result in zip(batch, results, strict=True):
        if pending.answer.done():
            continue
        if isinstance(result, Exception):
            pending.answer.set_exception(result)
        else:
            pending.answer.set_result(result)


def fail_all(batch: Sequence[Pending], failure: Exception) -> None:
    """Every caller still waiting gets `failure` (nothing of the batch was committed, or its
    outcome is unknown and the callers' idempotency keys settle it on retry)."""
    for pending in batch:
        if not pending.answer.done():
            pending.answer.set_exception(failure)
