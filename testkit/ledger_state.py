"""Everything a write would change, read straight from the database: the pools (every
column), the contribution totals, and each ledger table's row count and amounts. Two reads
compare equal exactly when nothing was written in between."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

# Each ledger table and the amount column summed with its row count.
LEDGERS = {
    "contributions": "wager_amount",
    "wins": "amount",
    "seed_fundings": "amount",
    "config_audit": "id",
    "pool_lifecycle": "id",
}


def ledger_state(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        state: dict[str, Any] = {
            "jackpots": conn.execute("SELECT * FROM jackpots ORDER BY lock_order").fetchall(),
            "contribution_totals": conn.execute("SELECT * FROM contribution_totals").fetchall(),
        }
        for table, amount in LEDGERS.items():
            query = sql.SQL("SELECT count(*), coalesce(sum({}), 0) FROM {}").format(
                sql.Identifier(amount), sql.Identifier(table)
            )
            state[table] = conn.execute(query).fetchone()
    return state
