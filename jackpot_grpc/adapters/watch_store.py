"""What WatchPools reads: the wins after the last one a process has announced.

Wins are written under the locks of every pool row (pool_store.lock_pools), so their ids
are drawn, and committed, in order: reading `id > last` after each change notification
finds every win exactly once.
"""

from __future__ import annotations

from jackpot_grpc.adapters.pool_store import Conn
from jackpot_grpc.domain.model import Group
from jackpot_grpc.domain.watch import Hit

# A refresh reads at most this many wins; more are read by the next one, at once.
WINS_PER_READ = 1000


async def last_win_id(conn: Conn) -> int:
    cursor = await conn.execute("SELECT coalesce(max(id), 0) FROM wins")
    row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


async def wins_after(conn: Conn, last_id: int, limit: int = WINS_PER_READ) -> list[Hit]:
    """The wins committed after win `last_id`, oldest first."""
    cursor = await conn.execute(
        """SELECT id, jackpot_group, amount, created_at, ledger_seq FROM wins
           WHERE id > %s ORDER BY id LIMIT %s""",
        (last_id, limit),
    )
    return [
        Hit(
            group=Group(group),
            amount=amount,
            won_at=created_at,
            win_id=win_id,
            ledger_seq=ledger_seq,
        )
        for win_id, group, amount, created_at, ledger_seq in await cursor.fetchall()
    ]
