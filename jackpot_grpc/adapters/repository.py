"""All SQL of the service. Every function runs inside the caller's transaction.

Writers lock the pool rows first, always in `lock_order`, so concurrent writers queue
instead of deadlocking (the runbook's `UPDATE ... WHERE group IN (...)` locks rows in
physical order and deadlocks from 4 clients up).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from jackpot_grpc.domain.errors import Unavailable
from jackpot_grpc.domain.model import (
    GROUPS,
    ContributeCommand,
    ContributionResult,
    ContributionShares,
    Group,
    LedgerAudit,
    PoolAudit,
    PoolConfig,
    PoolState,
    WinCommand,
    WinOutcome,
)

Conn = AsyncConnection[Any]

POOL_COLUMNS = """jackpot_group, current_amount, seed_amount, max_amount, contribution_rate,
    total_contributions, total_wins, total_seed_funding, contribution_count, win_count,
    last_won_amount, last_won_at, last_won_by_user_id, version, config_version, updated_at"""


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

CONTRIBUTION_COLUMNS = """id, idempotency_key, minor_amount, major_amount, mega_amount,
    minor_after, major_after, mega_after, created_at"""
LOCK_POOLS = f"SELECT {POOL_COLUMNS} FROM jackpots ORDER BY lock_order FOR UPDATE"
FIND_CONTRIBUTIONS = (
    f"SELECT {CONTRIBUTION_COLUMNS} FROM contributions WHERE idempotency_key = ANY(%s)"
)


def _contribution(row: dict[str, Any], replayed: bool) -> ContributionResult:
    return ContributionResult(
        contribution_id=row["id"],
        shares=ContributionShares(
            amounts={g: row[f"{g.value}_amount"] for g in GROUPS},
            pools_after={g: row[f"{g.value}_after"] for g in GROUPS},
        ),
        created_at=row["created_at"],
        replayed=replayed,
    )


async def find_contributions(conn: Conn, keys: list[str]) -> dict[str, ContributionResult]:
    """Earlier contributions with these idempotency keys, by key."""
    if not keys:
        return {}
    rows = await _rows(conn, FIND_CONTRIBUTIONS, (keys,))
    return {r["idempotency_key"]: _contribution(r, replayed=True) for r in rows}


async def lock_pools_and_find_contributions(
    conn: Conn, keys: list[str]
) -> tuple[dict[Group, PoolState], dict[str, ContributionResult]]:
    """lock_pools and find_contributions in one round trip (pipeline mode).

    The key lookup is queued after the lock, so it runs while the lock is held and sees
    every contribution committed before it.
    """
    async with conn.pipeline():
        locked = conn.cursor(row_factory=dict_row)
        await locked.execute(LOCK_POOLS)
        found = conn.cursor(row_factory=dict_row)
        if keys:
            await found.execute(FIND_CONTRIBUTIONS, (keys,))
        pools = {p.group: p for p in map(_pool, await locked.fetchall())}
        rows = await found.fetchall() if keys else []
    return pools, {r["idempotency_key"]: _contribution(r, replayed=True) for r in rows}


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
    INSERT INTO contributions (idempotency_key, game_id, wager_amount, minor_amount,
        major_amount, mega_amount, minor_after, major_after, mega_after)
    SELECT * FROM unnest(%(keys)b::text[], %(games)b::text[], %(wagers)b::bigint[],
        %(minor_amount)b::bigint[], %(major_amount)b::bigint[], %(mega_amount)b::bigint[],
        %(minor_after)b::bigint[], %(major_after)b::bigint[], %(mega_after)b::bigint[])
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
) -> tuple[list[PoolState], list[tuple[int, datetime]]]:
    """Apply a planned batch: move each pool by its sum (`counts[g]` contributions moved
    it), write a ledger row per command with its shares. Returns the pools after, in lock
    order, and (id, created_at) per ledger row, in the order of `commands`."""
    rows = await _rows(conn, RECORD_CONTRIBUTIONS, _record_params(sums, counts, commands, shares))
    pools = sorted(map(_pool, rows), key=lambda p: p.group.lock_order)
    created_at = rows[0]["ledger_created_at"]
    return pools, [(row_id, created_at) for row_id in rows[0]["ledger_ids"] or ()]


# --- wins --------------------------------------------------------------------------------


async def find_win(conn: Conn, key: str) -> dict[str, Any] | None:
    rows = await _rows(
        conn,
        """SELECT id, jackpot_group, amount, pool_before, seed_top_up, pool_after, created_at
           FROM wins WHERE idempotency_key = %s""",
        (key,),
    )
    return rows[0] if rows else None


def win_outcome(row: dict[str, Any]) -> WinOutcome:
    return WinOutcome(
        amount=row["amount"],
        pool_before=row["pool_before"],
        seed_top_up=row["seed_top_up"],
        pool_after=row["pool_after"],
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
        """INSERT INTO wins (idempotency_key, jackpot_group, game_id, user_id, requested_amount,
                             amount, pool_before, seed_top_up, pool_after)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
           RETURNING id, created_at""",
        (
            command.idempotency_key,
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
    )


def _config_json(config: PoolConfig) -> str:
    return json.dumps(
        {
            "contribution_rate": str(config.contribution_rate),
            "seed_amount": config.seed_amount,
            "max_amount": config.max_amount,
            "version": config.version,
        }
    )


async def save_config(
    conn: Conn, before: PoolConfig, after: PoolConfig, actor: str, reason: str
) -> int:
    """Write the new config and its audit row (who, when, before, after); the audit id."""
    await conn.execute(
        """UPDATE jackpots SET contribution_rate = %s, seed_amount = %s, max_amount = %s,
               config_version = %s, version = version + 1, updated_at = now()
           WHERE jackpot_group = %s""",
        (
            after.contribution_rate,
            after.seed_amount,
            after.max_amount,
            after.version,
            after.group.value,
        ),
    )
    rows = await _rows(
        conn,
        """INSERT INTO config_audit (jackpot_group, actor, reason, before, after)
           VALUES (%s, %s, %s, %s::jsonb, %s::jsonb) RETURNING id""",
        (after.group.value, actor, reason, _config_json(before), _config_json(after)),
    )
    audit_id: int = rows[0]["id"]
    return audit_id


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
    return LedgerAudit(
        pools=pools,
        contribution_count=int(row["n"]),
        recorded_contribution_count=row["contribution_count"],
        total_wagered=int(row["wagered"]),
        recorded_total_wagered=int(row["total_wagered"]),
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
