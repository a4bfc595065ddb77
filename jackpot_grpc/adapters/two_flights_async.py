"""The two-flight contribution batch over a connection (contribution_store.TwoFlights).

BEGIN, the pool locks and the key lookup in the first pipeline flight; the plan, the write
and the end (COMMIT, or validate_only's ROLLBACK) in the second. two_flights_async.py is
the source (JackpotService.contribute_many, on a pool connection); two_flights_sync.py,
the blocking twin (the batch thread's, adapters.batch_connection), is generated from it by
scripts/async_to_sync.py, and `make lint` fails when the two differ (docs/DECISIONS.md).
Comments do not survive the generation: what the code needs said goes in docstrings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from jackpot_grpc.adapters.contribution_store import (
    COMMIT,
    Planner,
    Recorded,
    TwoFlights,
    no_bound,
)
from jackpot_grpc.domain.model import ScopedKey


async def contribute_in_two_flights(
    conn: AsyncConnection[Any],
    keys: Sequence[ScopedKey],
    plan: Planner,
    *,
    end: Sequence[str] = COMMIT,
    committing: Callable[[], None] = no_bound,
) -> Recorded:
    """A whole contribution batch on an autocommit connection in two round trips: BEGIN,
    the pool locks and the key lookup in one pipeline flight; the write and the end in the
    second (sent as the pipeline closes). Returns after the end's answer: the pools after
    and (id, created_at, leaf index) per written row, or ([], []) when nothing was written.
    With `end=VALIDATE_ONLY_END` the same rows are written and rolled back: the answer is
    what would have been written (ids the rolled-back sequence handed out, never recorded).
    `committing` is called as the second flight is sent (the commit's bound starts)."""
    batch = TwoFlights(keys, plan)
    async with conn.pipeline() as flight:
        await conn.execute("BEGIN")
        first = [await conn.cursor(row_factory=dict_row).execute(*s) for s in batch.first]
        await flight.sync()
        answers = [await cursor.fetchall() for cursor in first]
        second = [
            await conn.cursor(row_factory=dict_row).execute(*s) for s in batch.second(*answers)
        ]
        committing()
        for statement in end:
            await conn.execute(statement)
    return batch.recorded(await second[0].fetchall() if second else [])
