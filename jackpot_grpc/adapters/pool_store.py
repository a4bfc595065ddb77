"""The jackpot pools as every writer and reader sees them: their columns, a row as a
PoolState, reading them and locking them in lock order; and the ledger's receipts (the
head claim and a row's leaf index), which every ledger writer uses after the pool locks.

Writers lock the pool rows first, always in `lock_order`, so concurrent writers queue
instead of deadlocking (the runbook's `UPDATE ... WHERE group IN (...)` locks rows in
physical order and deadlocks from 4 clients up).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from jackpot_grpc.domain.model import Group, OverflowPolicy, PendingConfig, PoolState

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


def pool_of(row: dict[str, Any]) -> PoolState:
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
        pending=None if row["pending_config"] is None else pending_of(row["pending_config"]),
    )


def pending_of(doc: dict[str, Any]) -> PendingConfig:
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


LOCK_POOLS = f"SELECT {POOL_COLUMNS} FROM jackpots ORDER BY lock_order FOR UPDATE"


# A row's leaf index: its own (migration 0013 on), or its leaf's (rows from before, all
# below ledger_receipts_from(): the condition lets the planner use 0017's partial index).
def receipt_of(table: str) -> str:
    return (
        f"coalesce({table}.leaf_index, (SELECT l.leaf_index FROM ledger_leaves l"
        f" WHERE l.ledger_table = '{table}' AND l.row_id = {table}.id"
        " AND l.leaf_index < ledger_receipts_from())) AS receipt"
    )


# The stores' connection: each store's functions run inside the caller's transaction.
Conn = AsyncConnection[Any]


async def fetch_dicts(
    conn: Conn, sql: str, params: Sequence[Any] | dict[str, Any] = ()
) -> list[dict[str, Any]]:
    """`sql`'s rows as dicts (the stores' one way to read a result)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


async def read_pools(conn: Conn) -> list[PoolState]:
    rows = await fetch_dicts(conn, f"SELECT {POOL_COLUMNS} FROM jackpots ORDER BY lock_order")
    return [pool_of(r) for r in rows]


async def lock_pools(conn: Conn) -> dict[Group, PoolState]:
    """Lock every pool row, in lock order, and return the pools as they stand."""
    return {p.group: p for p in map(pool_of, await fetch_dicts(conn, LOCK_POOLS))}
