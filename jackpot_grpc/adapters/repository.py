"""All SQL of the service. Every function runs inside the caller's transaction.

Long on purpose: it is the one module that knows the ledger schema (the scale plan's slot
rows change only this file), and most of its lines are SQL text.

Writers lock the pool rows first, always in `lock_order`, so concurrent writers queue
instead of deadlocking (the runbook's `UPDATE ... WHERE group IN (...)` locks rows in
physical order and deadlocks from 4 clients up).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection, Connection
from psycopg.rows import dict_row

from jackpot_grpc.domain import rules
from jackpot_grpc.domain.errors import Unavailable
from jackpot_grpc.domain.model import (
    GROUPS,
    BadRow,
    ConfigChange,
    ContributeCommand,
    ContributionResult,
    ContributionShares,
    Group,
    LedgerAudit,
    LifecycleAction,
    PendingConfig,
    PoolAudit,
    PoolConfig,
    PoolState,
    RecordedWin,
    RowAudit,
    ScopedKey,
    StoredContribution,
    WinCommand,
    WinOutcome,
    WinRecord,
)
from jackpot_grpc.domain.validation import rate_text

Conn = AsyncConnection[Any]
SyncConn = Connection[Any]

POOL_COLUMNS = """jackpot_group, current_amount, seed_amount, max_amount, contribution_rate,
    total_contributions, total_wins, total_seed_funding, contribution_count, win_count,
    last_won_amount, last_won_at, last_won_by_user_id, version, config_version, updated_at,
    suspended, suspended_reason, pending_config"""


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
        suspended=row["suspended"],
        suspended_reason=row["suspended_reason"],
        pending=None if row["pending_config"] is None else _pending(row["pending_config"]),
    )


def _pending(doc: dict[str, Any]) -> PendingConfig:
    """jackpots.pending_config (schedule_config's document) as a domain value."""
    rate = doc.get("contribution_rate")
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

CONTRIBUTION_COLUMNS = """id, client, idempotency_key, fingerprint, minor_amount,
    major_amount, mega_amount, minor_after, major_after, mega_after, created_at,
    minor_rate, major_rate, mega_rate"""
LOCK_POOLS = f"SELECT {POOL_COLUMNS} FROM jackpots ORDER BY lock_order FOR UPDATE"
# Keys are scoped per client: look up (client, key) pairs, on their unique index.
FIND_CONTRIBUTIONS = f"""SELECT {CONTRIBUTION_COLUMNS} FROM contributions
    WHERE idempotency_key IS NOT NULL
      AND (client, idempotency_key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"""


def _stored(row: dict[str, Any]) -> StoredContribution:
    result = ContributionResult(
        contribution_id=row["id"],
        shares=ContributionShares(
            amounts={g: row[f"{g.value}_amount"] for g in GROUPS},
            pools_after={g: row[f"{g.value}_after"] for g in GROUPS},
            # A rate of 0 recorded: suspended (or configured 0); none recorded: legacy row.
            sharing=tuple(
                g for g in GROUPS if row[f"{g.value}_rate"] is None or row[f"{g.value}_rate"] > 0
            ),
        ),
        created_at=row["created_at"],
        replayed=True,
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
PROOF_COLUMNS = ", ".join(f"{g.value}_rate, {g.value}_cap" for g in GROUPS)
PROOF_VALUES = ", ".join(
    f"%({g.value}_rate)s::numeric, CASE WHEN u.{g.value}_amount"
    f" < floor(u.wager * %({g.value}_rate)s::numeric) THEN %({g.value}_limit)s::bigint END"
    for g in GROUPS
)


def _proof_params(pools: Mapping[Group, PoolState]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for g in GROUPS:
        params[f"{g.value}_rate"] = rules.effective_rate(pools[g])
        params[f"{g.value}_limit"] = rules.ceiling(pools[g])
    return params


# One statement per batch: the runbook's batched CASE update moves all three pools, the
# ledger gets every row (one insert from arrays), and the contribution totals move by the
# batch's count and wager sum. Its caller holds the pool locks. Every result row is a pool
# after the move, carrying the new ledger ids (in input order: the sequence hands them out
# in unnest order) and their created_at, which defaults to now(), the transaction's
# timestamp, so every row of the batch has the same.
# %b: the arrays go in binary, which psycopg dumps in C; as text every string element is
# run through a quoting regex in Python.
RECORD_CONTRIBUTIONS = f"""WITH moved AS (
    UPDATE jackpots SET
        current_amount = current_amount + CASE jackpot_group
            WHEN 'minor' THEN %(minor)s::bigint WHEN 'major' THEN %(major)s::bigint
            WHEN 'mega' THEN %(mega)s::bigint END,
        total_contributions = total_contributions + CASE jackpot_group
            WHEN 'minor' THEN %(minor)s::bigint WHEN 'major' THEN %(major)s::bigint
            WHEN 'mega' THEN %(mega)s::bigint END,
        contribution_count = contribution_count + CASE jackpot_group
            WHEN 'minor' THEN %(minor_n)s::bigint WHEN 'major' THEN %(major_n)s::bigint
            WHEN 'mega' THEN %(mega_n)s::bigint END,
        version = version + 1,
        updated_at = now()
    WHERE jackpot_group IN ('minor', 'major', 'mega')
    RETURNING {POOL_COLUMNS}),
inserted AS (
    INSERT INTO contributions (idempotency_key, fingerprint, client, game_id, wager_amount,
        minor_amount, major_amount, mega_amount, minor_after, major_after, mega_after,
        {PROOF_COLUMNS})
    SELECT u.*, {PROOF_VALUES}
    FROM unnest(%(keys)b::text[], %(fingerprints)b::bytea[], %(clients)b::text[],
        %(games)b::text[], %(wagers)b::bigint[],
        %(minor_amount)b::bigint[], %(major_amount)b::bigint[], %(mega_amount)b::bigint[],
        %(minor_after)b::bigint[], %(major_after)b::bigint[], %(mega_after)b::bigint[])
        AS u(key, fingerprint, client, game, wager, minor_amount, major_amount, mega_amount,
             minor_after, major_after, mega_after)
    RETURNING id, created_at),
counted AS (
    UPDATE contribution_totals SET
        contribution_count = contribution_count + %(count)s::bigint,
        total_wagered = total_wagered + %(wagered)s::numeric)
SELECT moved.*,
    (SELECT array_agg(id ORDER BY id) FROM inserted) AS ledger_ids,
    (SELECT min(created_at) FROM inserted) AS ledger_created_at
FROM moved"""


def _record_params(
    sums: dict[Group, int],
    counts: dict[Group, int],
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
    for g in GROUPS:
        params[g.value] = sums[g]
        params[f"{g.value}_n"] = counts[g]
        params[f"{g.value}_amount"] = [s.amounts[g] for s in shares]
        params[f"{g.value}_after"] = [s.pools_after[g] for s in shares]
    return params


async def record_contributions(
    conn: Conn,
    sums: dict[Group, int],
    counts: dict[Group, int],
    commands: Sequence[ContributeCommand],
    shares: Sequence[ContributionShares],
    pools: Mapping[Group, PoolState],
) -> tuple[list[PoolState], list[tuple[int, datetime]]]:
    """Apply a planned batch: move each pool by its sum (`counts[g]` contributions moved
    it), write a ledger row per command with its shares and their proof (the rates and
    ceilings of `pools`, the locked pools the shares were split against). Returns the
    pools after, in lock order, and (id, created_at) per ledger row, in command order."""
    params = _record_params(sums, counts, commands, shares) | _proof_params(pools)
    return _recorded(await _rows(conn, RECORD_CONTRIBUTIONS, params))


def _recorded(
    rows: list[dict[str, Any]],
) -> tuple[list[PoolState], list[tuple[int, datetime]]]:
    updated = sorted(map(_pool, rows), key=lambda p: p.group.lock_order)
    created_at = rows[0]["ledger_created_at"]
    return updated, [(row_id, created_at) for row_id in rows[0]["ledger_ids"] or ()]


# --- a contribution batch in two round trips ----------------------------------------------


@dataclass(frozen=True)
class BatchWrite:
    """What a planned batch writes (record_contributions' arguments)."""

    sums: dict[Group, int]
    counts: dict[Group, int]
    commands: Sequence[ContributeCommand]
    shares: Sequence[ContributionShares]


# Given the locked pools and the earlier contributions with the batch's keys: what to write
# (None: nothing, every command is a replay or a refusal).
Planner = Callable[[dict[Group, PoolState], dict[ScopedKey, StoredContribution]], BatchWrite | None]
Recorded = tuple[list[PoolState], list[tuple[int, datetime]]]


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
    params = _record_params(write.sums, write.counts, write.commands, write.shares)
    return params | _proof_params(pools)


# --- wins --------------------------------------------------------------------------------


async def find_win(conn: Conn, client: str, key: str) -> RecordedWin | None:
    """The win `client` recorded with this idempotency key, if any (keys are per client)."""
    rows = await _rows(
        conn,
        """SELECT id, jackpot_group, fingerprint, amount, pool_before, seed_top_up,
                  pool_after, created_at
           FROM wins WHERE client = %s AND idempotency_key = %s""",
        (client, key),
    )
    if not rows:
        return None
    (row,) = rows
    return RecordedWin(
        win_id=row["id"],
        group=Group(row["jackpot_group"]),
        fingerprint=bytes(row["fingerprint"]) if row["fingerprint"] is not None else None,
        outcome=WinOutcome(
            amount=row["amount"],
            pool_before=row["pool_before"],
            seed_top_up=row["seed_top_up"],
            pool_after=row["pool_after"],
        ),
        created_at=row["created_at"],
    )


async def record_win(
    conn: Conn, command: WinCommand, outcome: WinOutcome
) -> tuple[int, datetime, PoolState]:
    """Move the pool, write the win and (if any) its seed top-up; return the new pool."""
    pools = await _rows(
        conn,
        f"""UPDATE jackpots SET
               current_amount = %(after)s,
               total_wins = total_wins + %(amount)s,
               total_seed_funding = total_seed_funding + %(top_up)s,
               win_count = win_count + 1,
               last_won_amount = %(amount)s,
               last_won_at = now(),
               last_won_by_user_id = %(user_id)s,
               version = version + 1,
               updated_at = now()
           WHERE jackpot_group = %(group)s
           RETURNING {POOL_COLUMNS}""",
        {
            "after": outcome.pool_after,
            "amount": outcome.amount,
            "top_up": outcome.seed_top_up,
            "user_id": command.user_id,
            "group": command.group.value,
        },
    )
    wins = await _rows(
        conn,
        """INSERT INTO wins (idempotency_key, fingerprint, client, jackpot_group, game_id,
                             user_id, requested_amount, amount, pool_before, seed_top_up,
                             pool_after)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           RETURNING id, created_at""",
        (
            command.idempotency_key,
            command.fingerprint if command.idempotency_key else None,
            command.client,
            command.group.value,
            command.game_id,
            command.user_id,
            command.win_amount,
            outcome.amount,
            outcome.pool_before,
            outcome.seed_top_up,
            outcome.pool_after,
        ),
    )
    win_id, created_at = wins[0]["id"], wins[0]["created_at"]
    if outcome.seed_top_up:
        await conn.execute(
            """INSERT INTO seed_fundings (jackpot_group, amount, reason, win_id)
               VALUES (%s, %s, 'reset to seed after win', %s)""",
            (command.group.value, outcome.seed_top_up, win_id),
        )
    return win_id, created_at, _pool(pools[0])


# --- config ------------------------------------------------------------------------------


def config_of(pool: PoolState) -> PoolConfig:
    return PoolConfig(
        group=pool.group,
        contribution_rate=pool.contribution_rate,
        seed_amount=pool.seed_amount,
        max_amount=pool.max_amount,
        version=pool.config_version,
        pending=pool.pending,
    )


def _config_json(config: PoolConfig) -> str:
    return json.dumps(
        {
            "contribution_rate": rate_text(config.contribution_rate),
            "seed_amount": config.seed_amount,
            "max_amount": config.max_amount,
            "version": config.version,
        }
    )


async def save_config(
    conn: Conn,
    before: PoolConfig,
    after: PoolConfig,
    actor: str,
    reason: str,
    client: str,
    *,
    clear_pending: bool = False,
) -> int:
    """Write the new config and its audit row (who, when, before, after); the audit id.

    `client` is the authenticated caller; `actor` is the free text the request carried.
    `clear_pending`: this is the pool's pending change, applied (at its next win).
    """
    await conn.execute(
        """UPDATE jackpots SET contribution_rate = %s, seed_amount = %s, max_amount = %s,
               config_version = %s, version = version + 1, updated_at = now(),
               pending_config = CASE WHEN %s THEN NULL ELSE pending_config END
           WHERE jackpot_group = %s""",
        (
            after.contribution_rate,
            after.seed_amount,
            after.max_amount,
            after.version,
            clear_pending,
            after.group.value,
        ),
    )
    rows = await _rows(
        conn,
        """INSERT INTO config_audit (jackpot_group, actor, reason, before, after, client)
           VALUES (%s, %s, %s, %s::jsonb, %s::jsonb, %s) RETURNING id""",
        (after.group.value, actor, reason, _config_json(before), _config_json(after), client),
    )
    audit_id: int = rows[0]["id"]
    return audit_id


# --- pool lifecycle ----------------------------------------------------------------------

LIFECYCLE_INSERT = """INSERT INTO pool_lifecycle (jackpot_group, action, client, actor, reason,
        pending)
    VALUES (%s, %s, %s, %s, %s, %s::jsonb) RETURNING id, changed_at"""


def _pending_change_json(change: ConfigChange) -> str | None:
    """A scheduled change as pool_lifecycle.pending records it: only what it sets."""
    doc: dict[str, Any] = {}
    if change.contribution_rate is not None:
        doc["contribution_rate"] = rate_text(change.contribution_rate)
    if change.seed_amount is not None:
        doc["seed_amount"] = change.seed_amount
    if change.max_amount is not None:
        doc["max_amount"] = change.max_amount
    doc["clear_max_amount"] = change.clear_max_amount
    return json.dumps(doc)


async def set_suspended(
    conn: Conn, group: Group, suspended: bool, actor: str, reason: str, client: str
) -> tuple[int, PoolState]:
    """Take a pool out of play (or back in) and ledger it; the lifecycle row's id and the
    pool after. The caller holds the pool locks (the row draws ledger_seq under them)."""
    action = LifecycleAction.SUSPEND if suspended else LifecycleAction.RESUME
    rows = await _rows(
        conn, LIFECYCLE_INSERT, (group.value, action.value, client, actor, reason, None)
    )
    pools = await _rows(
        conn,
        f"""UPDATE jackpots SET suspended = %s, suspended_reason = %s, version = version + 1,
               updated_at = now()
           WHERE jackpot_group = %s RETURNING {POOL_COLUMNS}""",
        (suspended, reason if suspended else "", group.value),
    )
    return rows[0]["id"], _pool(pools[0])


async def schedule_config(conn: Conn, change: ConfigChange, client: str) -> tuple[int, PoolState]:
    """Record `change` as the pool's pending config (replacing any pending one) and ledger
    it; the lifecycle row's id and the pool after. The caller holds the pool locks."""
    rows = await _rows(
        conn,
        LIFECYCLE_INSERT,
        (
            change.group.value,
            LifecycleAction.SCHEDULE_CONFIG.value,
            client,
            change.actor,
            change.reason,
            _pending_change_json(change),
        ),
    )
    schedule_id, at = rows[0]["id"], rows[0]["changed_at"]
    doc = json.loads(_pending_change_json(change) or "{}") | {
        "actor": change.actor,
        "reason": change.reason,
        "client": client,
        "scheduled_at": at.isoformat(),
        "schedule_id": schedule_id,
    }
    pools = await _rows(
        conn,
        f"""UPDATE jackpots SET pending_config = %s::jsonb, version = version + 1,
               updated_at = now()
           WHERE jackpot_group = %s RETURNING {POOL_COLUMNS}""",
        (json.dumps(doc), change.group.value),
    )
    return schedule_id, _pool(pools[0])


# --- hit history -------------------------------------------------------------------------

# Newest first by (created_at, id), on wins_newest / wins_group_newest (0012): a page is
# an index range scan from the cursor, whatever the depth. Only the filters asked for are
# in the statement (constants below), so each shape gets a plan using its index.
WIN_HISTORY = """SELECT w.id, w.jackpot_group, w.amount, w.requested_amount, w.game_id,
        w.user_id, w.client, w.created_at, w.pool_before, w.pool_after, w.seed_top_up,
        w.ledger_seq, l.leaf_index
    FROM wins w LEFT JOIN ledger_leaves l ON l.ledger_table = 'wins' AND l.row_id = w.id
    WHERE {where}
    ORDER BY w.created_at DESC, w.id DESC
    LIMIT %(limit)s"""


async def list_wins(
    conn: Conn,
    *,
    group: Group | None,
    start: datetime | None,
    end: datetime | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[WinRecord]:
    """Up to `limit` wins newest first: of one pool or all, created in [start, end), and
    (paging) older than the cursor `after` (created_at, id)."""
    where = ["true"]
    params: dict[str, Any] = {"limit": limit}
    if group is not None:
        where.append("w.jackpot_group = %(group)s")
        params["group"] = group.value
    if start is not None:
        where.append("w.created_at >= %(start)s")
        params["start"] = start
    if end is not None:
        where.append("w.created_at < %(end)s")
        params["end"] = end
    if after is not None:
        where.append("(w.created_at, w.id) < (%(at)s, %(id)s)")
        params["at"], params["id"] = after
    rows = await _rows(conn, WIN_HISTORY.format(where=" AND ".join(where)), params)
    return [
        WinRecord(
            win_id=r["id"],
            group=Group(r["jackpot_group"]),
            amount=r["amount"],
            requested_amount=r["requested_amount"],
            game_id=r["game_id"],
            user_id=r["user_id"],
            client=r["client"],
            created_at=r["created_at"],
            pool_before=r["pool_before"],
            pool_after=r["pool_after"],
            seed_funded_by_operator=r["seed_top_up"],
            seed_funded_from_reserve=0,
            ledger_seq=r["ledger_seq"],
            ledger_index=r["leaf_index"],
        )
        for r in rows
    ]


# --- reports -----------------------------------------------------------------------------


async def contribution_totals(conn: Conn) -> tuple[int, int]:
    """(number of contributions, sum of wagers), as kept with every batch."""
    rows = await _rows(conn, "SELECT contribution_count, total_wagered FROM contribution_totals")
    return rows[0]["contribution_count"], int(rows[0]["total_wagered"])


async def audit_ledger(conn: Conn) -> LedgerAudit:
    """The books reconciled: audit_pools, and the contribution totals against the ledger.
    Run it in a REPEATABLE READ transaction so both read one snapshot."""
    pools = await audit_pools(conn)
    rows = await _rows(
        conn,
        """SELECT t.contribution_count, t.total_wagered, c.n, c.wagered
           FROM contribution_totals t CROSS JOIN
                (SELECT count(*) AS n, coalesce(sum(wager_amount), 0) AS wagered
                 FROM contributions) c""",
    )
    (row,) = rows
    proofs = await audit_rows(conn)
    return LedgerAudit(
        pools=pools,
        contribution_count=int(row["n"]),
        recorded_contribution_count=row["contribution_count"],
        total_wagered=int(row["wagered"]),
        recorded_total_wagered=int(row["total_wagered"]),
        rows=proofs,
    )


# Every ledger row re-proved, in one statement (window functions over the three ledgers):
# - each contribution share recomputed from its wager and the rate it records:
#   floor(wager × rate), or, when it records a ceiling, what fitted under it (the amount
#   the row left the pool at is where the share stopped);
# - the chain of each pool: ordered by ledger_seq (drawn under the pool locks, so per
#   pool it is the commit order), from the pool's chain start, every row's `*_after` must
#   be the previous one moved by this row. `drift` is how far a row's after is from the
#   sum of every move before it; a broken link is where the drift changes, so one bad
#   row is named once instead of every row after it;
# - each win's seed top-up against its seed-funding rows, and each win's own arithmetic;
# - each pool's counts against the pool row. (Its amount against the ledger is the sums'
#   check, audit_pools.)
# One row per problem: table, id (NULL for a pool row), pool, what is wrong.
#
# The chain runs per pool (one ordered scan each: narrower and much faster than one
# window partitioned by pool over every contribution unpivoted three times).
def _chain_of(g: str) -> str:
    return f"""running_{g} AS (
    SELECT s.*, (SELECT amount FROM ledger_chain_starts WHERE jackpot_group = '{g}')
        + sum(delta) OVER (ORDER BY ledger_seq) AS expected
    FROM (SELECT ledger_seq, 'contributions' AS tbl, id, {g}_amount AS delta, {g}_after AS after
          FROM contributions WHERE ledger_seq IS NOT NULL
          UNION ALL
          SELECT ledger_seq, 'wins', id, seed_top_up - amount, pool_after
          FROM wins WHERE ledger_seq IS NOT NULL AND jackpot_group = '{g}'
          UNION ALL  -- a top-up is part of its win's move; other fundings move on their own
          SELECT ledger_seq, 'seed_fundings', id, amount, NULL
          FROM seed_fundings
          WHERE ledger_seq IS NOT NULL AND win_id IS NULL AND jackpot_group = '{g}') s),
drifts_{g} AS (
    SELECT *, '{g}' AS grp, after - expected AS drift,
        lag(after - expected, 1, 0) OVER (ORDER BY ledger_seq) AS prev_drift
    FROM running_{g} WHERE after IS NOT NULL)"""


# Only the broken links leave the windows.
CHAIN_CTES = ",\n".join(_chain_of(g.value) for g in GROUPS) + (
    ",\ndrifts AS ("
    + " UNION ALL ".join(
        f"SELECT * FROM drifts_{g.value} WHERE drift <> prev_drift" for g in GROUPS
    )
    + ")"
)


# A contribution's share of pool g against floor(wager × rate), or what fitted under its
# ceiling when it records one.
def _share_check_of(g: str) -> str:
    return f"""SELECT 'contributions' AS tbl, id, '{g}' AS grp,
        format('share %%s, but floor(%%s × %%s) = %%s%%s', {g}_amount, wager_amount, {g}_rate,
               floor(wager_amount * {g}_rate),
               CASE WHEN {g}_cap IS NOT NULL THEN format(' capped at %%s', {g}_cap) ELSE '' END)
            AS problem
    FROM contributions
    WHERE {g}_rate IS NOT NULL AND CASE WHEN {g}_cap IS NULL
        THEN {g}_amount <> floor(wager_amount * {g}_rate)
        ELSE {g}_amount >= floor(wager_amount * {g}_rate) OR {g}_amount <> greatest(0,
             least(floor(wager_amount * {g}_rate), {g}_cap - ({g}_after - {g}_amount))) END"""


SHARE_CHECKS = "\n    UNION ALL\n    ".join(_share_check_of(g.value) for g in GROUPS)


# A contribution's recorded rate of pool g against the rate in force by the config history:
# the latest rate change before it (both rows sequenced: the sequence is commit order);
# before any, the first change's `before`, or the pool's rate if none; 0 while the pool is
# suspended (pool_lifecycle: from a suspend to the next resume). Rate changes from
# before config changes were sequenced (migration 0010) cannot be placed: rows that only
# they could explain are not judged.
def _rate_check_of(g: str) -> str:
    changes = (
        f"config_audit WHERE jackpot_group = '{g}' AND after ? 'contribution_rate'"
        " AND (before ->> 'contribution_rate')::numeric"
        " IS DISTINCT FROM (after ->> 'contribution_rate')::numeric"
    )
    return f"""SELECT 'contributions' AS tbl, id, '{g}' AS grp,
        format('rate %%s, but %%s was in force', recorded, in_force) AS problem
    FROM (SELECT id, kind, recorded, CASE WHEN bool_or(off) OVER (PARTITION BY off_no)
              THEN 0 ELSE coalesce(max(rate) OVER (PARTITION BY grp_no),
              CASE WHEN NOT EXISTS (SELECT 1 FROM {changes} AND ledger_seq IS NULL)
                   THEN coalesce((SELECT (before ->> 'contribution_rate')::numeric
                                  FROM {changes} ORDER BY ledger_seq LIMIT 1),
                                 (SELECT contribution_rate FROM jackpots
                                  WHERE jackpot_group = '{g}')) END) END AS in_force
          FROM (SELECT *, count(rate) OVER (ORDER BY seq) AS grp_no,
                       count(off) OVER (ORDER BY seq) AS off_no
                FROM (SELECT 'c' AS kind, id, ledger_seq AS seq, NULL::numeric AS rate,
                             {g}_rate AS recorded, NULL::boolean AS off
                      FROM contributions WHERE ledger_seq IS NOT NULL AND {g}_rate IS NOT NULL
                      UNION ALL
                      SELECT 'a', id, ledger_seq, (after ->> 'contribution_rate')::numeric,
                             NULL, NULL
                      FROM {changes} AND ledger_seq IS NOT NULL
                      UNION ALL  -- a suspended pool's rate is 0 until it is resumed
                      SELECT 's', id, ledger_seq, NULL, NULL, action = 'suspend'
                      FROM pool_lifecycle WHERE jackpot_group = '{g}'
                          AND action IN ('suspend', 'resume')) track) grouped) judged
    WHERE kind = 'c' AND recorded <> in_force"""


RATE_CHECKS = "\n    UNION ALL\n    ".join(_rate_check_of(g.value) for g in GROUPS)
AUDIT_ROWS = f"""WITH shares AS (
    {SHARE_CHECKS}),
rates AS (
    {RATE_CHECKS}),
{CHAIN_CTES},
chain AS (
    SELECT tbl, id, grp,
        format('after %%s, but the amount before it was %%s and it moves %%s', after,
               expected + prev_drift - delta, delta) AS problem
    FROM drifts WHERE drift <> prev_drift),
funding AS (
    SELECT win_id, count(*) AS n, sum(amount) AS funded
    FROM seed_fundings WHERE win_id IS NOT NULL GROUP BY win_id),
top_ups AS (
    SELECT 'wins' AS tbl, w.id, w.jackpot_group AS grp,
        format('seed top-up %%s, but %%s', w.seed_top_up,
               CASE WHEN f.win_id IS NULL THEN 'no seed-funding row'
                    ELSE format('%%s seed-funding row(s) of %%s', f.n, f.funded) END)
            AS problem
    FROM wins w LEFT JOIN funding f ON f.win_id = w.id
    WHERE w.seed_top_up <> coalesce(f.funded, 0) OR f.n > 1
    UNION ALL
    SELECT 'seed_fundings', s.id, s.jackpot_group,
        format('funds win %%s, a %%s win', s.win_id, w.jackpot_group)
    FROM seed_fundings s JOIN wins w ON w.id = s.win_id
    WHERE s.jackpot_group <> w.jackpot_group
    UNION ALL
    SELECT 'wins', id, jackpot_group,
        format('pays %%s from %%s with top-up %%s, but records %%s after', amount,
               pool_before, seed_top_up, pool_after)
    FROM wins WHERE pool_after <> pool_before - amount + seed_top_up),
counted AS (
    SELECT count(*) FILTER (WHERE minor_amount > 0) AS minor,
           count(*) FILTER (WHERE major_amount > 0) AS major,
           count(*) FILTER (WHERE mega_amount > 0) AS mega
    FROM contributions),
counts AS (
    SELECT 'jackpots' AS tbl, NULL::bigint AS id, j.jackpot_group AS grp,
        format('records %%s contributions and %%s wins; the ledger has %%s and %%s',
               j.contribution_count, j.win_count, cc.n, coalesce(wc.n, 0)) AS problem
    FROM jackpots j
    JOIN (SELECT 'minor' AS grp, minor AS n FROM counted UNION ALL
          SELECT 'major', major FROM counted UNION ALL SELECT 'mega', mega FROM counted) cc
        ON cc.grp = j.jackpot_group
    LEFT JOIN (SELECT jackpot_group, count(*) AS n FROM wins GROUP BY jackpot_group) wc
        ON wc.jackpot_group = j.jackpot_group
    WHERE j.contribution_count <> cc.n OR j.win_count <> coalesce(wc.n, 0)),
win_amounts AS (  -- a win pays what was asked, or (asking nothing) the whole pool
    SELECT 'wins' AS tbl, id, jackpot_group AS grp,
        CASE WHEN requested_amount IS NOT NULL
             THEN format('pays %%s, but %%s was asked', amount, requested_amount)
             ELSE format('a whole-pool win pays %%s of a pool of %%s', amount, pool_before)
        END AS problem
    FROM wins WHERE amount <> coalesce(requested_amount, pool_before)),
seeds_in_force AS (  -- a win's pool's seed when it won, by the config history
    SELECT w.id, w.jackpot_group, w.seed_top_up, w.pool_before - w.amount AS left_over,
        coalesce(
            (SELECT (a.after ->> 'seed_amount')::bigint FROM config_audit a
             WHERE a.jackpot_group = w.jackpot_group AND CASE
                 WHEN a.ledger_seq IS NOT NULL AND w.ledger_seq IS NOT NULL
                 THEN a.ledger_seq < w.ledger_seq ELSE a.changed_at <= w.created_at END
             ORDER BY a.id DESC LIMIT 1),
            (SELECT (a.before ->> 'seed_amount')::bigint FROM config_audit a
             WHERE a.jackpot_group = w.jackpot_group ORDER BY a.id LIMIT 1),
            (SELECT j.seed_amount FROM jackpots j WHERE j.jackpot_group = w.jackpot_group))
            AS seed
    FROM wins w),
seed_top_ups AS (  -- a top-up is exactly what brings the pool back to that seed
    SELECT 'wins' AS tbl, id, jackpot_group AS grp,
        format('seed top-up %%s, but the seed in force (%%s) needs %%s', seed_top_up, seed,
               greatest(0, seed - left_over)) AS problem
    FROM seeds_in_force WHERE seed_top_up <> greatest(0, seed - left_over)),
unsequenced AS (  -- every row since the log began has a sequence or is a leaf (0010)
    SELECT t.tbl, t.id, t.grp, 'no ledger_seq and no leaf: written past the ledger' AS problem
    FROM (SELECT 'contributions' AS tbl, id, 'minor' AS grp, ledger_seq FROM contributions
          UNION ALL SELECT 'wins', id, jackpot_group, ledger_seq FROM wins
          UNION ALL SELECT 'seed_fundings', id, jackpot_group, ledger_seq FROM seed_fundings
          UNION ALL SELECT 'config_audit', id, jackpot_group, ledger_seq FROM config_audit
          UNION ALL SELECT 'pool_lifecycle', id, jackpot_group, ledger_seq FROM pool_lifecycle
         ) t
    WHERE t.ledger_seq IS NULL AND NOT EXISTS (
        SELECT 1 FROM ledger_leaves l WHERE l.ledger_table = t.tbl AND l.row_id = t.id)),
problems AS (
    SELECT * FROM shares UNION ALL SELECT * FROM chain UNION ALL SELECT * FROM top_ups
    UNION ALL SELECT * FROM counts UNION ALL SELECT * FROM win_amounts
    UNION ALL SELECT * FROM seed_top_ups UNION ALL SELECT * FROM unsequenced
    UNION ALL SELECT * FROM rates)
SELECT tbl, id, grp, problem, count(*) OVER () AS total
FROM problems ORDER BY tbl, id NULLS FIRST, grp LIMIT %(limit)s"""

# What the proofs could not cover: rows from before migration 0005.
AUDIT_LEGACY = """SELECT
    (SELECT count(*) FROM contributions
     WHERE minor_rate IS NULL OR major_rate IS NULL OR mega_rate IS NULL) AS without_rate,
    (SELECT count(*) FROM contributions WHERE ledger_seq IS NULL)
    + (SELECT count(*) FROM wins WHERE ledger_seq IS NULL)
    + (SELECT count(*) FROM seed_fundings WHERE ledger_seq IS NULL) AS unsequenced"""

# Memory for the audit's sorts (this transaction only): about 70 bytes per pool per row.
AUDIT_WORK_MEM = "256MB"
# The audit reads every ledger row: longer than DB_STATEMENT_TIMEOUT allows a call (the
# server's background audit is bounded by its own timeout on top, and cancelled at it).
AUDIT_STATEMENT_TIMEOUT = "120s"
# The most bad rows an audit names; it still counts them all.
BAD_ROWS_NAMED = 1000


async def audit_rows(conn: Conn, limit: int = BAD_ROWS_NAMED) -> RowAudit:
    """Every ledger row re-proved (AUDIT_ROWS): the bad ones named, up to `limit`."""
    # The chain's window sorts every row of every pool: in memory, not in temporary files.
    await conn.execute(
        f"SET LOCAL work_mem = '{AUDIT_WORK_MEM}';"
        f" SET LOCAL statement_timeout = '{AUDIT_STATEMENT_TIMEOUT}'"
    )
    rows = await _rows(conn, AUDIT_ROWS, {"limit": limit})
    (legacy,) = await _rows(conn, AUDIT_LEGACY)
    return RowAudit(
        bad=[
            BadRow(
                table=r["tbl"],
                row_id=r["id"],
                group=Group(r["grp"]),
                problem=r["problem"],
            )
            for r in rows
        ],
        bad_count=rows[0]["total"] if rows else 0,
        without_rate=legacy["without_rate"],
        unsequenced=legacy["unsequenced"],
    )


async def audit_pools(conn: Conn) -> list[PoolAudit]:
    """Every pool reconciled against its ledger, in one consistent snapshot."""
    rows = await _rows(
        conn,
        """WITH c AS (
               SELECT coalesce(sum(minor_amount), 0) AS minor,
                      coalesce(sum(major_amount), 0) AS major,
                      coalesce(sum(mega_amount), 0) AS mega
               FROM contributions),
           w AS (SELECT jackpot_group, sum(amount) AS won FROM wins GROUP BY jackpot_group),
           s AS (SELECT jackpot_group, sum(amount) AS funded FROM seed_fundings
                 GROUP BY jackpot_group)
           SELECT j.jackpot_group, j.current_amount, j.total_contributions, j.total_wins,
                  j.total_seed_funding,
                  CASE j.jackpot_group WHEN 'minor' THEN c.minor WHEN 'major' THEN c.major
                       ELSE c.mega END AS contributed,
                  coalesce(w.won, 0) AS won, coalesce(s.funded, 0) AS funded
           FROM jackpots j CROSS JOIN c
           LEFT JOIN w USING (jackpot_group) LEFT JOIN s USING (jackpot_group)
           ORDER BY j.lock_order""",
    )
    return [
        PoolAudit(
            group=Group(r["jackpot_group"]),
            current_amount=r["current_amount"],
            seed_funding=int(r["funded"]),
            contributions=int(r["contributed"]),
            wins=int(r["won"]),
            recorded_total_contributions=r["total_contributions"],
            recorded_total_wins=r["total_wins"],
            recorded_total_seed_funding=r["total_seed_funding"],
        )
        for r in rows
    ]


async def ping(conn: Conn) -> None:
    """The database answers and can take writes: a standby or a read-only database
    answers SELECT 1 but refuses every Contribute, so it is not ready."""
    cursor = await conn.execute(
        "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"
    )
    row = await cursor.fetchone()
    if row is None or row[0]:
        raise Unavailable("database answers but cannot take writes (read-only or in recovery)")


# The readiness probe's write (migration 0011): this process's heartbeat row, and the rows
# of processes silent for a day pruned on the way. It commits like any write, so it waits
# wherever a synchronous standby holds commits.
HEARTBEAT = """WITH pruned AS (
    DELETE FROM write_heartbeat WHERE beat_at < now() - interval '1 day' AND process <> %(p)s)
INSERT INTO write_heartbeat (process) VALUES (%(p)s)
ON CONFLICT (process) DO UPDATE SET beat_at = now()"""


async def heartbeat(conn: Conn, process: str) -> None:
    """One write, committed (the connection is in autocommit)."""
    await conn.execute(HEARTBEAT, {"p": process})


@dataclass(frozen=True)
class ClusterIdentity:
    """Which database history a connection reached: the cluster's system identifier
    (initdb's; a streaming standby shares its primary's) and the timeline (a promotion
    starts a new one). A change after a reconnect is a failover (or a restore)."""

    system_identifier: int
    timeline: int


# pg_control_system() and pg_control_checkpoint() are executable by any role (no
# superuser, no pg_monitor). The checkpoint's timeline lags a promotion until the first
# checkpoint after it; the current WAL file's name carries the timeline at once (its first
# 8 hex digits), on a primary.
IDENTITY = """SELECT s.system_identifier, c.timeline_id,
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END
FROM pg_control_system() s, pg_control_checkpoint() c"""


async def cluster_identity(conn: Conn) -> ClusterIdentity:
    cursor = await conn.execute(IDENTITY)
    row = await cursor.fetchone()
    assert row is not None
    system_identifier, checkpoint_timeline, wal_file = row
    timeline = int(wal_file[:8], 16) if wal_file else int(checkpoint_timeline)
    return ClusterIdentity(int(system_identifier), timeline)
