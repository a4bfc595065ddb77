"""All SQL of the service. Every function runs inside the caller's transaction.

Long on purpose: it is the one module that knows the ledger schema (the scale plan's slot
rows change only this file), and most of its lines are SQL text.

Writers lock the pool rows first, always in `lock_order`, so concurrent writers queue
instead of deadlocking (the runbook's `UPDATE ... WHERE group IN (...)` locks rows in
physical order and deadlocks from 4 clients up).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection, Connection
from psycopg.rows import dict_row

from jackpot_grpc.domain import rules
from jackpot_grpc.domain.model import (
    GROUPS,
    ContributeCommand,
    ContributionResult,
    ContributionShares,
    Group,
    OverflowPolicy,
    PendingConfig,
    PoolState,
    ScopedKey,
    StoredContribution,
)

Conn = AsyncConnection[Any]
SyncConn = Connection[Any]

POOL_COLUMNS = """jackpot_group, current_amount, seed_amount, max_amount, contribution_rate,
    total_contributions, total_wins, total_seed_funding, contribution_count, win_count,
    last_won_amount, last_won_at, last_won_by_user_id, version, config_version, updated_at,
    reserve_rate, overflow_policy, overflow_target, reserve_amount, overflow_amount,
    total_contributed, total_diverted_in, total_diverted_out, seed_from_reserve,
    suspended, suspended_reason, pending_config"""


_POLICIES = {p.value: p for p in OverflowPolicy}  # a dict look-up: Enum() is slow


# The ledger's receipts (migration 0013): every ledger writer, in its own transaction and
# after the pool locks (lock order: the pools in lock_order, then the head), moves the
# ledger head past its rows and gives them the indexes it moved past, in the order it
# writes them: `first_leaf` to `first_leaf + n - 1`. The head row's lock orders the
# writers' commits, so the indexes are gap-free and in commit order across processes (a
# rollback returns its indexes). Used as a CTE of the statement that inserts the rows;
# a new ledger table's writer does the same (docs/LEDGER.md, "Adding an event type").
def claim_leaves(n: str) -> str:
    """The head moved past `n` rows (an SQL expression: a placeholder or a number)."""
    return f"UPDATE ledger_head SET size = size + {n} RETURNING size - {n} AS first_leaf"


def _pool(row: dict[str, Any]) -> PoolState:
    return PoolState(
        group=Group(row["jackpot_group"]),
        current_amount=row["current_amount"],
        seed_amount=row["seed_amount"],
        max_amount=row["max_amount"],
        contribution_rate=row["contribution_rate"],
        total_contributions=row["total_contributions"],
        total_wins=row["total_wins"],
        total_seed_funding=row["total_seed_funding"],
        contribution_count=row["contribution_count"],
        win_count=row["win_count"],
        last_won_amount=row["last_won_amount"],
        last_won_at=row["last_won_at"],
        last_won_by_user_id=row["last_won_by_user_id"],
        version=row["version"],
        config_version=row["config_version"],
        updated_at=row["updated_at"],
        reserve_rate=row["reserve_rate"],
        overflow_policy=_POLICIES[row["overflow_policy"]],
        overflow_target=Group(row["overflow_target"]) if row["overflow_target"] else None,
        reserve_amount=row["reserve_amount"],
        overflow_amount=row["overflow_amount"],
        total_contributed=row["total_contributed"],
        total_diverted_in=row["total_diverted_in"],
        total_diverted_out=row["total_diverted_out"],
        seed_from_reserve=row["seed_from_reserve"],
        suspended=row["suspended"],
        suspended_reason=row["suspended_reason"],
        pending=None if row["pending_config"] is None else _pending(row["pending_config"]),
    )


def _pending(doc: dict[str, Any]) -> PendingConfig:
    """jackpots.pending_config (schedule_config's document) as a domain value."""
    rate = doc.get("contribution_rate")
    reserve_rate = doc.get("reserve_rate")
    policy = doc.get("overflow_policy")
    target = doc.get("overflow_target")
    return PendingConfig(
        contribution_rate=None if rate is None else Decimal(rate),
        seed_amount=doc.get("seed_amount"),
        max_amount=doc.get("max_amount"),
        clear_max_amount=bool(doc.get("clear_max_amount")),
        actor=doc["actor"],
        reason=doc["reason"],
        client=doc["client"],
        scheduled_at=datetime.fromisoformat(doc["scheduled_at"]),
        schedule_id=doc["schedule_id"],
        reserve_rate=None if reserve_rate is None else Decimal(reserve_rate),
        overflow_policy=None if policy is None else _POLICIES[policy],
        overflow_target=None if target is None else Group(target),
    )


async def _rows(
    conn: Conn, sql: str, params: Sequence[Any] | dict[str, Any] = ()
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


async def read_pools(conn: Conn) -> list[PoolState]:
    rows = await _rows(conn, f"SELECT {POOL_COLUMNS} FROM jackpots ORDER BY lock_order")
    return [_pool(r) for r in rows]


async def lock_pools(conn: Conn) -> dict[Group, PoolState]:
    """Lock every pool row, in lock order, and return the pools as they stand."""
    rows = await _rows(conn, LOCK_POOLS)
    return {p.group: p for p in map(_pool, rows)}


# --- contributions ---------------------------------------------------------------------


# A row's leaf index: its own (migration 0013 on), or its leaf's (rows from before).
def receipt_of(table: str) -> str:
    return (
        f"coalesce({table}.leaf_index, (SELECT l.leaf_index FROM ledger_leaves l"
        f" WHERE l.ledger_table = '{table}' AND l.row_id = {table}.id)) AS receipt"
    )


CONTRIBUTION_COLUMNS = f"""id, client, idempotency_key, fingerprint, minor_amount,
    major_amount, mega_amount, minor_after, major_after, mega_after, created_at,
    minor_rate, major_rate, mega_rate, minor_reserve_rate, major_reserve_rate,
    mega_reserve_rate, {receipt_of("contributions")}"""
LOCK_POOLS = f"SELECT {POOL_COLUMNS} FROM jackpots ORDER BY lock_order FOR UPDATE"
# Keys are scoped per client: look up (client, key) pairs, on their unique index.
FIND_CONTRIBUTIONS = f"""SELECT {CONTRIBUTION_COLUMNS} FROM contributions
    WHERE idempotency_key IS NOT NULL
      AND (client, idempotency_key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"""


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


def _find_params(keys: Sequence[ScopedKey]) -> tuple[list[str], list[str]]:
    return [client for client, _ in keys], [key for _, key in keys]


def _by_scoped_key(rows: list[dict[str, Any]]) -> dict[ScopedKey, StoredContribution]:
    return {(r["client"], r["idempotency_key"]): _stored(r) for r in rows}


async def find_contributions(
    conn: Conn, keys: Sequence[ScopedKey]
) -> dict[ScopedKey, StoredContribution]:
    """Earlier contributions with these (client, idempotency key) pairs, by pair."""
    if not keys:
        return {}
    return _by_scoped_key(await _rows(conn, FIND_CONTRIBUTIONS, _find_params(keys)))


async def lock_pools_and_find_contributions(
    conn: Conn, keys: Sequence[ScopedKey]
) -> tuple[dict[Group, PoolState], dict[ScopedKey, StoredContribution]]:
    """lock_pools and find_contributions in one round trip (pipeline mode).

    The key lookup is queued after the lock, so it runs while the lock is held and sees
    every contribution committed before it.
    """
    async with conn.pipeline():
        locked = conn.cursor(row_factory=dict_row)
        await locked.execute(LOCK_POOLS)
        found = conn.cursor(row_factory=dict_row)
        if keys:
            await found.execute(FIND_CONTRIBUTIONS, _find_params(keys))
        pools = {p.group: p for p in map(_pool, await locked.fetchall())}
        rows = await found.fetchall() if keys else []
    return pools, _by_scoped_key(rows)


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
# and the contribution totals move by the batch's count and wager sum. Its caller holds the
# pool locks. Every result row is a pool after the move, carrying the new ledger ids (in
# input order: the sequence hands them out in unnest order), their leaf indexes (claimed
# from the ledger head in this transaction, in the same order: the receipts) and their
# created_at, which defaults to now(), the transaction's timestamp, so every row of the
# batch has the same.
# %b: the arrays go in binary, which psycopg dumps in C; as text every string element is
# run through a quoting regex in Python.
RECORD_CONTRIBUTIONS = f"""WITH moved AS (
    UPDATE jackpots SET
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
    WHERE jackpot_group = m.grp
    RETURNING {", ".join("jackpots." + c.strip() for c in POOL_COLUMNS.split(","))}),
claimed AS ({claim_leaves("%(count)s::bigint")}),
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
        total_wagered = total_wagered + %(wagered)s::numeric)
SELECT moved.*,
    (SELECT array_agg(id ORDER BY id) FROM inserted) AS ledger_ids,
    (SELECT array_agg(leaf_index ORDER BY id) FROM inserted) AS ledger_leaves,
    (SELECT min(created_at) FROM inserted) AS ledger_created_at
FROM moved"""


def _record_params(
    commands: Sequence[ContributeCommand],
    shares: Sequence[ContributionShares],
) -> dict[str, Any]:
    wagers = [c.wager_amount for c in commands]
    params: dict[str, Any] = {
        "keys": [c.idempotency_key for c in commands],
        # Only keyed rows are bound to a request (and hashing the rest would be wasted).
        "fingerprints": [c.fingerprint if c.idempotency_key else None for c in commands],
        # Each row's own client: the batcher batches calls from many clients together.
        "clients": [c.client for c in commands],
        "games": [c.game_id for c in commands],
        "wagers": wagers,
        "count": len(wagers),
        "wagered": sum(wagers),
    }
    overflowed = any(s.overflows is not None for s in shares)
    none_overflowed = [0] * len(shares)
    for g in GROUPS:
        params[f"{g.value}_amount"] = [s.amounts[g] for s in shares]
        params[f"{g.value}_after"] = [s.pools_after[g] for s in shares]
        params[f"{g.value}_overflow"] = (
            [s.overflows[g] if s.overflows is not None else 0 for s in shares]
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
        params[f"{g.value}_moves"] = [
            sums[g],
            write.counts[g],
            write.reserves.get(g, 0),
            0 if diverts else over,
            over if diverts else 0,
            write.diverted_in.get(g, 0),
        ]
    return params


async def record_contributions(
    conn: Conn,
    sums: dict[Group, int],
    counts: dict[Group, int],
    commands: Sequence[ContributeCommand],
    shares: Sequence[ContributionShares],
    pools: Mapping[Group, PoolState],
) -> Recorded:
    """Apply a planned batch: move each pool by its sum (`counts[g]` contributions moved
    it), write a ledger row per command with its shares and their proof (the rates and
    ceilings of `pools`, the locked pools the shares were split against). Returns the
    pools after, in lock order, and (id, created_at, leaf index) per ledger row, in
    command order."""
    write = BatchWrite(sums, counts, commands, shares, *_meters_of(shares, rules.in_play(pools)))
    return _recorded(await _rows(conn, RECORD_CONTRIBUTIONS, _write_params(write, pools)))


def _meters_of(
    shares: Sequence[ContributionShares], pools: Mapping[Group, PoolState]
) -> tuple[dict[Group, int], dict[Group, int], dict[Group, int]]:
    """The reserve, overflow and diverted-in sums of `shares` (BatchWrite's last three)."""
    reserves, overflows = dict.fromkeys(GROUPS, 0), dict.fromkeys(GROUPS, 0)
    for share in shares:
        for g in GROUPS:
            reserves[g] += share.reserves[g] if share.reserves is not None else 0
            overflows[g] += share.overflows[g] if share.overflows is not None else 0
    diverted_in = dict.fromkeys(GROUPS, 0)
    for g in GROUPS:
        target = pools[g].overflow_target
        if target is not None:
            diverted_in[target] += overflows[g]
    return reserves, overflows, diverted_in


def _recorded(rows: list[dict[str, Any]]) -> Recorded:
    updated = sorted(map(_pool, rows), key=lambda p: p.group.lock_order)
    created_at = rows[0]["ledger_created_at"]
    ids = rows[0]["ledger_ids"] or ()
    leaves = rows[0]["ledger_leaves"] or ()
    return updated, [
        RecordedRow(row_id, created_at, leaf) for row_id, leaf in zip(ids, leaves, strict=True)
    ]


# --- a contribution batch in two round trips ----------------------------------------------


@dataclass(frozen=True)
class BatchWrite:
    """What a planned batch writes (record_contributions' arguments)."""

    sums: dict[Group, int]
    counts: dict[Group, int]
    commands: Sequence[ContributeCommand]
    shares: Sequence[ContributionShares]
    reserves: Mapping[Group, int] = field(default_factory=dict)
    overflows: Mapping[Group, int] = field(default_factory=dict)
    diverted_in: Mapping[Group, int] = field(default_factory=dict)


# Given the locked pools and the earlier contributions with the batch's keys: what to write
# (None: nothing, every command is a replay or a refusal).
Planner = Callable[[dict[Group, PoolState], dict[ScopedKey, StoredContribution]], BatchWrite | None]


# How a batch's transaction ends: COMMIT, or (validate_only) the checks COMMIT would run
# (deferred constraints fire now), then ROLLBACK.
COMMIT = ("COMMIT",)
VALIDATE_ONLY_END = ("SET CONSTRAINTS ALL IMMEDIATE", "ROLLBACK")


def _no_bound() -> None:
    return None


async def contribute_in_two_flights(
    conn: Conn,
    keys: Sequence[ScopedKey],
    plan: Planner,
    *,
    end: Sequence[str] = COMMIT,
    committing: Callable[[], None] = _no_bound,
) -> Recorded:
    """A whole contribution batch on an autocommit connection in two round trips: BEGIN,
    the pool locks and the key lookup in one pipeline flight; the write and COMMIT in the
    second (sent as the pipeline closes). Returns after the COMMIT's answer: the pools after
    and (id, created_at) per written row, or ([], []) when nothing was written. With
    `end=VALIDATE_ONLY_END` the same rows are written and rolled back: the answer is what
    would have been written (ids the rolled-back sequence handed out, never recorded).
    `committing` is called as the second flight is sent (the commit's bound starts)."""
    async with conn.pipeline() as flight:
        await conn.execute("BEGIN")
        locked = conn.cursor(row_factory=dict_row)
        await locked.execute(LOCK_POOLS)
        found = conn.cursor(row_factory=dict_row)
        if keys:
            await found.execute(FIND_CONTRIBUTIONS, _find_params(keys))
        await flight.sync()
        pools = {p.group: p for p in map(_pool, await locked.fetchall())}
        write = plan(pools, _by_scoped_key(await found.fetchall() if keys else []))
        written = conn.cursor(row_factory=dict_row)
        if write is not None:
            await written.execute(RECORD_CONTRIBUTIONS, _write_params(write, pools))
        committing()
        for statement in end:
            await conn.execute(statement)
    return _recorded(await written.fetchall()) if write is not None else ([], [])


def contribute_in_two_flights_sync(
    conn: SyncConn,
    keys: Sequence[ScopedKey],
    plan: Planner,
    committing: Callable[[], None] = _no_bound,
) -> Recorded:
    """contribute_in_two_flights on a blocking connection (the batch thread's)."""
    with conn.pipeline() as flight:
        conn.execute("BEGIN")
        locked = conn.cursor(row_factory=dict_row)
        locked.execute(LOCK_POOLS)
        found = conn.cursor(row_factory=dict_row)
        if keys:
            found.execute(FIND_CONTRIBUTIONS, _find_params(keys))
        flight.sync()
        pools = {p.group: p for p in map(_pool, locked.fetchall())}
        write = plan(pools, _by_scoped_key(found.fetchall() if keys else []))
        written = conn.cursor(row_factory=dict_row)
        if write is not None:
            written.execute(RECORD_CONTRIBUTIONS, _write_params(write, pools))
        committing()
        conn.execute("COMMIT")
    return _recorded(written.fetchall()) if write is not None else ([], [])


def _write_params(write: BatchWrite, pools: Mapping[Group, PoolState]) -> dict[str, Any]:
    pools = rules.in_play(pools)  # what the planner split against (domain.batch)
    params = _record_params(write.commands, write.shares)
    return params | _proof_params(pools) | _meter_params(write, write.sums, pools)
