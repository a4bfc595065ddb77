"""A contribution batch's write: the only code that writes contributions.

A batch is planned in the service (domain.batch: shares, replays, refused keys) against
locked pools and the earlier contributions with its keys, and written here in one
statement (RECORD_CONTRIBUTIONS) that moves the pools, inserts the ledger rows with their
receipts and moves the totals. Two ways to run it on an autocommit connection:

- the one statement (contribute_in_one_statement): the common case on the batch thread,
  one round trip. The thread plans against the pools as its last batch left them,
  assuming no key exists, and sends the write guarded (GUARDED_RECORD): the database
  locks the pools, checks their versions and the keys, and writes, or writes nothing and
  says why. Only the batch thread takes it: it writes one batch at a time, so what it
  last saw is usually still so; concurrent contribute_many calls would mostly be refused
  (BENCHMARKS.md).
- the two flights (TwoFlights, driven by two_flights_async.contribute_in_two_flights and,
  on the batch thread's blocking connection, by its generated twin in two_flights_sync):
  BEGIN, the pool locks and the key lookup; then the plan, the write and COMMIT (or,
  validate_only, ROLLBACK). Every batch the guard refused, and every contribute_many call
  (ContributeBatch, validate_only, JACKPOT_BATCHING=off).

The drivers only move an I/O-free object's statements (OneStatement, TwoFlights) over
their connection; the blocking two flights are generated from the async ones
(scripts/async_to_sync.py), so the two cannot drift.

Over 400 lines because most of them are the one write statement, its guard and the
parameters they take: splitting them would put the SQL away from what binds it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.errors import LockNotAvailable
from psycopg.rows import dict_row

from jackpot_grpc.adapters.packed_arrays import PackedTexts, bigints, byteas, texts
from jackpot_grpc.adapters.pool_store import (
    LOCK_POOLS,
    POOL_COLUMNS,
    claim_leaves,
    pool_of,
    receipt_of,
)
from jackpot_grpc.domain import rules
from jackpot_grpc.domain.model import (
    GROUPS,
    ContributeCommand,
    ContributionResult,
    ContributionShares,
    Group,
    PoolState,
    ScopedKey,
    StoredContribution,
)

CONTRIBUTION_COLUMNS = f"""id, client, idempotency_key, fingerprint, minor_amount,
    major_amount, mega_amount, minor_after, major_after, mega_after, created_at,
    minor_rate, major_rate, mega_rate, minor_reserve_rate, major_reserve_rate,
    mega_reserve_rate, {receipt_of("contributions")}"""
# Keys are scoped per client: look up (client, key) pairs, on their unique index.
FIND_CONTRIBUTIONS = f"""SELECT {CONTRIBUTION_COLUMNS} FROM contributions
    WHERE idempotency_key IS NOT NULL
      AND (client, idempotency_key) IN (SELECT * FROM unnest(%b::text[], %b::text[]))"""


def _shared(row: dict[str, Any], g: str) -> bool:
    rate, reserve_rate = row[f"{g}_rate"], row[f"{g}_reserve_rate"]
    return rate is None or rate > 0 or (reserve_rate is not None and reserve_rate > 0)


@dataclass(frozen=True)
class RecordedRow:
    """A ledger row just written: its id, created_at and leaf index (its receipt)."""

    row_id: int
    created_at: datetime
    leaf_index: int


Recorded = tuple[list[PoolState], list[RecordedRow]]


def _stored(row: dict[str, Any]) -> StoredContribution:
    result = ContributionResult(
        contribution_id=row["id"],
        shares=ContributionShares(
            amounts={g: row[f"{g.value}_amount"] for g in GROUPS},
            pools_after={g: row[f"{g.value}_after"] for g in GROUPS},
            # Rates of 0 recorded: suspended (or configured 0); none recorded: legacy row.
            sharing=tuple(g for g in GROUPS if _shared(row, g.value)),
        ),
        created_at=row["created_at"],
        replayed=True,
        leaf_index=row["receipt"],
    )
    return StoredContribution(result, bytes(row["fingerprint"]))


def _find_params(keys: Sequence[ScopedKey]) -> tuple[PackedTexts, PackedTexts]:
    return texts([client for client, _ in keys]), texts([key for _, key in keys])


def _by_scoped_key(rows: list[dict[str, Any]]) -> dict[ScopedKey, StoredContribution]:
    return {(r["client"], r["idempotency_key"]): _stored(r) for r in rows}


# What lets the audit re-prove each row (migration 0005): the rate each pool applied, and
# the ceiling a share was cut to when the whole share did not fit (NULL when it fitted).
# Every row of a batch splits against the same locked pools, so rate and ceiling are one
# value per pool; the share is cut exactly when it is below floor(wager × rate).
# and (migration 0014) the reserve rate, where each pool's overflow went (its own name: its
# overflow meter; another pool: diverted there). Every row of a batch splits against the
# same locked pools, so these are one value per pool; the reserve share is
# floor(wager × reserve rate), computed here; a share was cut exactly when it overflowed.
PROOF_COLUMNS = ", ".join(
    f"{g.value}_rate, {g.value}_cap, {g.value}_reserve_rate, {g.value}_reserve,"
    f" {g.value}_overflow_to"
    for g in GROUPS
)
PROOF_VALUES = ", ".join(
    f"%({g.value}_rate)s::numeric, CASE WHEN u.{g.value}_overflow > 0"
    f" THEN %({g.value}_limit)s::bigint END, %({g.value}_reserve_rate)s::numeric,"
    f" floor(u.wager * %({g.value}_reserve_rate)s::numeric)::bigint,"
    f" %({g.value}_overflow_to)s::text"
    for g in GROUPS
)


def _proof_params(pools: Mapping[Group, PoolState]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for g in GROUPS:
        pool = pools[g]
        params[f"{g.value}_rate"] = rules.effective_rate(pool)
        params[f"{g.value}_limit"] = rules.ceiling(pool)
        params[f"{g.value}_reserve_rate"] = rules.effective_reserve_rate(pool)
        params[f"{g.value}_overflow_to"] = (pool.overflow_target or g).value
    return params


# Each pool's move, one row per pool (joined to its jackpots row): one bigint array per
# pool, [display, contributions, reserve, overflow kept, diverted out, diverted in].
_MOVES = ", ".join(f"('{g.value}', %({g.value}_moves)b::bigint[])" for g in GROUPS)
_SHARE_ARRAYS = ", ".join(f"%({g.value}_amount)b::bigint[]" for g in GROUPS)
_AFTER_ARRAYS = ", ".join(f"%({g.value}_after)b::bigint[]" for g in GROUPS)
_OVERFLOW_ARRAYS = ", ".join(f"%({g.value}_overflow)b::bigint[]" for g in GROUPS)


# One statement per batch: the runbook's batched update moves all three pools (display,
# reserve, overflow and the meters), the ledger gets every row (one insert from arrays),
# and the contribution totals move by the batch's count and wager sum. Every result row
# is a pool after the move, carrying the new ledger ids (in input order: the sequence
# hands them out in unnest order), their leaf indexes (claimed from the ledger head in
# this transaction, in the same order: the receipts) and their created_at, which
# defaults to now(), the transaction's timestamp, so every row of the batch has the same.
# %b: the arrays go in binary, which psycopg dumps in C; as text every string element is
# run through a quoting regex in Python.
def _record(guard: str, gate: str, result: str) -> str:
    return _compact(f"""WITH {guard}moved AS (
    UPDATE jackpots AS j SET
        current_amount = current_amount + m.v[1],
        total_contributions = total_contributions + m.v[1],
        contribution_count = contribution_count + m.v[2],
        reserve_amount = reserve_amount + m.v[3],
        overflow_amount = overflow_amount + m.v[4],
        total_diverted_out = total_diverted_out + m.v[5],
        total_diverted_in = total_diverted_in + m.v[6],
        -- what wagers gave: display shares less diverted-in, overflow, reserve shares
        total_contributed = total_contributed + m.v[1] - m.v[6] + m.v[4] + m.v[5] + m.v[3],
        version = version + 1,
        updated_at = now()
    FROM (VALUES {_MOVES}) AS m(grp, v)
    WHERE jackpot_group = m.grp{gate.replace("WHERE", "AND")}
    RETURNING {", ".join("j." + c.strip() for c in POOL_COLUMNS.split(","))}),
claimed AS ({_gated(claim_leaves("%(count)s::bigint"), gate)}),
inserted AS (
    INSERT INTO contributions (idempotency_key, fingerprint, client, game_id, wager_amount,
        minor_amount, major_amount, mega_amount, minor_after, major_after, mega_after,
        minor_overflow, major_overflow, mega_overflow, {PROOF_COLUMNS}, leaf_index)
    SELECT u.key, u.fingerprint, u.client, u.game, u.wager, u.minor_amount, u.major_amount,
        u.mega_amount, u.minor_after, u.major_after, u.mega_after, u.minor_overflow,
        u.major_overflow, u.mega_overflow, {PROOF_VALUES}, claimed.first_leaf + u.n - 1
    FROM unnest(%(keys)b::text[], %(fingerprints)b::bytea[], %(clients)b::text[],
        %(games)b::text[], %(wagers)b::bigint[], {_SHARE_ARRAYS}, {_AFTER_ARRAYS},
        {_OVERFLOW_ARRAYS})
        WITH ORDINALITY
        AS u(key, fingerprint, client, game, wager, minor_amount, major_amount, mega_amount,
             minor_after, major_after, mega_after, minor_overflow, major_overflow,
             mega_overflow, n)
    CROSS JOIN claimed
    ORDER BY u.n
    RETURNING id, created_at, leaf_index),
counted AS (
    UPDATE contribution_totals SET
        contribution_count = contribution_count + %(count)s::bigint,
        total_wagered = total_wagered + %(wagered)s::numeric{gate})
SELECT {result}moved.*,
    (SELECT array_agg(id ORDER BY id) FROM inserted) AS ledger_ids,
    (SELECT array_agg(leaf_index ORDER BY id) FROM inserted) AS ledger_leaves,
    (SELECT min(created_at) FROM inserted) AS ledger_created_at
FROM {"guard LEFT JOIN moved ON true" if result else "moved"}""")


def _compact(statement: str) -> str:
    """The statement on one line: no comments, single spaces. psycopg caches the parsing of
    a statement's placeholders only up to 4,096 characters; past that it parses them again
    on every execute (about 80 µs a batch here). The write statements fit once compacted.
    Their SQL has no string literal or identifier with two spaces or a `--` in it."""
    lines = (line.split("--", 1)[0] for line in statement.splitlines())
    return " ".join(" ".join(lines).split())


def _gated(statement: str, gate: str) -> str:
    """An UPDATE ... RETURNING with the guard's gate before its RETURNING."""
    head, returning = statement.split(" RETURNING ")
    return f"{head}{gate} RETURNING {returning}"


# Its caller holds the pool locks (the two-flight path's first flight took them).
RECORD_CONTRIBUTIONS = _record(guard="", gate="", result="")

# The same write guarded, for an autocommit connection: one statement, its own transaction.
# The guard (contribution_guard: migration 0016, NOWAIT since 0018) runs first: every write
# below is gated on its answer, so no row is locked before it holds the pool locks in lock
# order, and nothing is written unless the pools are at the versions the batch was planned against
# and none of its keys exists. Its answer is the first column: NULL (written, one row per
# pool as above) or why not (one row, the rest NULL).
_GATE = "\n    WHERE (SELECT refused FROM guard) IS NULL"
GUARDED_RECORD = _record(
    guard="""guard AS MATERIALIZED (
    SELECT contribution_guard(%(expected)b::bigint[], %(guard_clients)b::text[],
        %(guard_keys)b::text[]) AS refused),
""",
    gate=_GATE,
    result="guard.refused, ",
)


def _record_params(
    commands: Sequence[ContributeCommand],
    shares: Sequence[ContributionShares],
) -> dict[str, Any]:
    wagers = [c.wager_amount for c in commands]
    params: dict[str, Any] = {
        "keys": texts([c.idempotency_key for c in commands]),
        # Only keyed rows are bound to a request (and hashing the rest would be wasted).
        "fingerprints": byteas([c.fingerprint if c.idempotency_key else None for c in commands]),
        # Each row's own client: the batcher batches calls from many clients together.
        "clients": texts([c.client for c in commands]),
        "games": texts([c.game_id for c in commands]),
        "wagers": bigints(wagers),
        "count": len(wagers),
        "wagered": sum(wagers),
    }
    overflowed = any(s.overflows is not None for s in shares)
    none_overflowed = bigints([0] * len(shares))
    for g in GROUPS:
        params[f"{g.value}_amount"] = bigints([s.amounts[g] for s in shares])
        params[f"{g.value}_after"] = bigints([s.pools_after[g] for s in shares])
        params[f"{g.value}_overflow"] = (
            bigints([s.overflows[g] if s.overflows is not None else 0 for s in shares])
            if overflowed
            else none_overflowed
        )
    return params


def _meter_params(
    write: BatchWrite, sums: Mapping[Group, int], pools: Mapping[Group, PoolState]
) -> dict[str, Any]:
    """Each pool's move (_MOVES): display, contributions, and the reserve and overflow
    meters'. Its overflow is kept, or diverted out when the pool has a target."""
    params: dict[str, Any] = {}
    for g in GROUPS:
        over = write.overflows.get(g, 0)
        diverts = pools[g].overflow_target is not None
        params[f"{g.value}_moves"] = bigints(
            [
                sums[g],
                write.counts[g],
                write.reserves.get(g, 0),
                0 if diverts else over,
                over if diverts else 0,
                write.diverted_in.get(g, 0),
            ]
        )
    return params


def _recorded(rows: list[dict[str, Any]]) -> Recorded:
    updated = sorted(map(pool_of, rows), key=lambda p: p.group.lock_order)
    created_at = rows[0]["ledger_created_at"]
    ids = rows[0]["ledger_ids"] or ()
    leaves = rows[0]["ledger_leaves"] or ()
    return updated, [
        RecordedRow(row_id, created_at, leaf) for row_id, leaf in zip(ids, leaves, strict=True)
    ]


@dataclass(frozen=True)
class BatchWrite:
    """What a planned batch writes: each pool's sum and count, the commands written with
    their shares, and the meters' sums (reserves, overflows, diverted in)."""

    sums: dict[Group, int]
    counts: dict[Group, int]
    commands: Sequence[ContributeCommand]
    shares: Sequence[ContributionShares]
    reserves: Mapping[Group, int] = field(default_factory=dict)
    overflows: Mapping[Group, int] = field(default_factory=dict)
    diverted_in: Mapping[Group, int] = field(default_factory=dict)


def _write_params(write: BatchWrite, pools: Mapping[Group, PoolState]) -> dict[str, Any]:
    pools = rules.in_play(pools)  # what the planner split against (domain.batch)
    params = _record_params(write.commands, write.shares)
    return params | _proof_params(pools) | _meter_params(write, write.sums, pools)


# Given the locked pools and the earlier contributions with the batch's keys: what to write
# (None: nothing, every command is a replay or a refusal).
Planner = Callable[[dict[Group, PoolState], dict[ScopedKey, StoredContribution]], BatchWrite | None]


# How a batch's transaction ends: COMMIT, or (validate_only) the checks COMMIT would run
# (deferred constraints fire now), then ROLLBACK.
COMMIT = ("COMMIT",)
VALIDATE_ONLY_END = ("SET CONSTRAINTS ALL IMMEDIATE", "ROLLBACK")


def no_bound() -> None:
    """The default `committing`: no commit bound to arm."""
    return None


Statement = tuple[str, Any]  # SQL text and its parameters


class TwoFlights:
    """The two-flight batch without its I/O: what each flight sends, what the answers
    mean. `first`: the pool locks and the key lookup (after BEGIN); `second(...)`, given
    their rows: the write (none when the plan writes nothing), before the transaction's
    end; `recorded(...)`, given the write's rows: the batch as written."""

    def __init__(self, keys: Sequence[ScopedKey], plan: Planner) -> None:
        self.first: list[Statement] = [(LOCK_POOLS, None)]
        if keys:
            self.first.append((FIND_CONTRIBUTIONS, _find_params(keys)))
        self._plan = plan
        self._writes = False

    def second(
        self, locked: list[dict[str, Any]], found: list[dict[str, Any]] | None = None
    ) -> list[Statement]:
        pools = {p.group: p for p in map(pool_of, locked)}
        write = self._plan(pools, _by_scoped_key(found or []))
        self._writes = write is not None
        return [] if write is None else [(RECORD_CONTRIBUTIONS, _write_params(write, pools))]

    def recorded(self, rows: list[dict[str, Any]]) -> Recorded:
        return _recorded(rows) if self._writes else ([], [])


NOTHING_TO_WRITE = "nothing to write"
POOLS_BUSY = "pools busy"  # another writer holds a pool lock (the guard takes them NOWAIT)


class OneStatement:
    """The one-statement batch without its I/O: a batch planned against `pools` (as the
    last batch left them) with no earlier key. `statement`: the guarded write, or None when
    the plan refused every command against these pools (which may be stale);
    `recorded(...)`, given its rows: the batch as written, or the guard's reason for
    writing nothing ('pools moved', 'key exists')."""

    def __init__(
        self, pools: Mapping[Group, PoolState], keys: Sequence[ScopedKey], plan: Planner
    ) -> None:
        write = plan(dict(pools), {})
        self.statement: Statement | None = None
        if write is not None:
            params = _write_params(write, pools)
            params["expected"] = bigints([pools[g].version for g in _IN_LOCK_ORDER])
            params["guard_clients"], params["guard_keys"] = _find_params(keys)
            self.statement = (GUARDED_RECORD, params)

    @staticmethod
    def recorded(rows: list[dict[str, Any]]) -> Recorded | str:
        refused: str | None = rows[0]["refused"]
        return refused if refused is not None else _recorded(rows)


def contribute_in_one_statement(
    conn: Connection[Any],
    pools: Mapping[Group, PoolState],
    keys: Sequence[ScopedKey],
    plan: Planner,
    committing: Callable[[], None] = no_bound,
) -> Recorded | str:
    """The batch in one guarded statement on an autocommit connection (its own
    transaction): the batch as written, or why nothing was (OneStatement, or
    NOTHING_TO_WRITE, POOLS_BUSY). Then the caller runs the two flights.

    The guard takes the pool locks NOWAIT: the bound armed here is the commit's, so the
    statement must never wait for another writer inside it (a long wait would end as an
    unknown outcome while the write still landed after). A held lock fails the statement
    at once, with nothing written; the two flights then wait for it outside the bound."""
    batch = OneStatement(pools, keys, plan)
    if batch.statement is None:
        return NOTHING_TO_WRITE
    committing()  # autocommit: the statement is its own commit, bounded as one
    try:
        rows = conn.cursor(row_factory=dict_row).execute(*batch.statement).fetchall()
    except LockNotAvailable:
        return POOLS_BUSY
    return batch.recorded(rows)


_IN_LOCK_ORDER = sorted(GROUPS, key=lambda g: g.lock_order)  # the guard's version order
