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

from jackpot_grpc.domain.model import (
    GROUPS,
    ContributeCommand,
    ContributionResult,
    ContributionShares,
    Group,
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


INSERT_CONTRIBUTIONS = """WITH inserted AS (
    INSERT INTO contributions (idempotency_key, game_id, wager_amount, minor_amount,
        major_amount, mega_amount, minor_after, major_after, mega_after)
    SELECT * FROM unnest(%(keys)b::text[], %(games)b::text[], %(wagers)b::bigint[],
        %(minor_amount)b::bigint[], %(major_amount)b::bigint[], %(mega_amount)b::bigint[],
        %(minor_after)b::bigint[], %(major_after)b::bigint[], %(mega_after)b::bigint[])
    RETURNING id, created_at)
    SELECT array_agg(id ORDER BY id) AS ids, min(created_at) AS created_at FROM inserted"""
# %b: the arrays go in binary, which psycopg dumps in C; as text every string element is
# run through a quoting regex in Python. One row back instead of one per contribution:
# created_at defaults to now(), the transaction's timestamp, so every row has the same.

# The runbook's batched CASE update: one statement moves all three pools.
UPDATE_POOL_SUMS = f"""UPDATE jackpots SET
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
    RETURNING {POOL_COLUMNS}"""


def _ledger_columns(
    commands: Sequence[ContributeCommand], shares: Sequence[ContributionShares]
) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {
        "keys": [c.idempotency_key for c in commands],
        "games": [c.game_id for c in commands],
        "wagers": [c.wager_amount for c in commands],
    }
    for g in GROUPS:
        columns[f"{g.value}_amount"] = [s.amounts[g] for s in shares]
        columns[f"{g.value}_after"] = [s.pools_after[g] for s in shares]
    return columns


def _sum_params(sums: dict[Group, int], counts: dict[Group, int]) -> dict[str, int]:
    return {**{g.value: sums[g] for g in GROUPS}, **{f"{g.value}_n": counts[g] for g in GROUPS}}


def _in_order(rows: list[dict[str, Any]]) -> list[tuple[int, datetime]]:
    # ids come from the sequence in unnest order, so sorting them restores the input order.
    (row,) = rows
    return [(row_id, row["created_at"]) for row_id in row["ids"] or ()]


def _pools_in_order(rows: list[dict[str, Any]]) -> list[PoolState]:
    return sorted(map(_pool, rows), key=lambda p: p.group.lock_order)


async def add_contributions(
    conn: Conn, commands: Sequence[ContributeCommand], shares: Sequence[ContributionShares]
) -> list[tuple[int, datetime]]:
    """One multi-row insert for a whole batch; (id, created_at) in the order given."""
    return _in_order(await _rows(conn, INSERT_CONTRIBUTIONS, _ledger_columns(commands, shares)))


async def apply_contribution_sums(
    conn: Conn, sums: dict[Group, int], counts: dict[Group, int]
) -> list[PoolState]:
    """Move all three pools by a batch's sums; the pools after, in lock order."""
    return _pools_in_order(await _rows(conn, UPDATE_POOL_SUMS, _sum_params(sums, counts)))


async def record_contributions(
    conn: Conn,
    sums: dict[Group, int],
    counts: dict[Group, int],
    commands: Sequence[ContributeCommand],
    shares: Sequence[ContributionShares],
) -> tuple[list[PoolState], list[tuple[int, datetime]]]:
    """apply_contribution_sums and add_contributions in one round trip (pipeline mode)."""
    async with conn.pipeline():
        update = conn.cursor(row_factory=dict_row)
        await update.execute(UPDATE_POOL_SUMS, _sum_params(sums, counts))
        insert = conn.cursor(row_factory=dict_row)
        await insert.execute(INSERT_CONTRIBUTIONS, _ledger_columns(commands, shares))
        pools = _pools_in_order(await update.fetchall())
        ids = _in_order(await insert.fetchall())
    return pools, ids


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
    """(number of contributions, sum of wagers) over the whole ledger."""
    rows = await _rows(
        conn, "SELECT count(*) AS n, coalesce(sum(wager_amount), 0) AS wagered FROM contributions"
    )
    return int(rows[0]["n"]), int(rows[0]["wagered"])


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
    await conn.execute("SELECT 1")
