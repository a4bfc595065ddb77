"""The hit history: recorded wins, newest first, a page at a time (read only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jackpot_grpc.adapters.pool_store import Conn, fetch_dicts
from jackpot_grpc.domain.model import (
    Group,
    WinRecord,
)

# Newest first by (created_at, id), on wins_newest / wins_group_newest (0012): a page is
# an index range scan from the cursor, whatever the depth. Only the filters asked for are
# in the statement (constants below), so each shape gets a plan using its index. A win's
# leaf index is its receipt (leaf_index, claimed as it was written: 0013), or for a row
# written before receipts, its leaf's (below ledger_receipts_from(): 0017's partial index).
WIN_HISTORY = """SELECT w.id, w.jackpot_group, w.amount, w.requested_amount, w.game_id,
        w.user_id, w.client, w.created_at, w.pool_before, w.pool_after, w.seed_top_up,
        coalesce(w.reserve_top_up, 0) AS reserve_top_up, w.ledger_seq,
        coalesce(w.leaf_index, l.leaf_index) AS leaf_index
    FROM wins w LEFT JOIN ledger_leaves l
        ON w.leaf_index IS NULL AND l.ledger_table = 'wins' AND l.row_id = w.id
        AND l.leaf_index < ledger_receipts_from()
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
    rows = await fetch_dicts(conn, WIN_HISTORY.format(where=" AND ".join(where)), params)
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
            # By source: the win's reset paid from the reserve first (its seed-funding row
            # with source `reserve`), the rest by the operator (NULL before the reserve: 0).
            seed_funded_by_operator=r["seed_top_up"] - r["reserve_top_up"],
            seed_funded_from_reserve=r["reserve_top_up"],
            ledger_seq=r["ledger_seq"],
            ledger_index=r["leaf_index"],
        )
        for r in rows
    ]
