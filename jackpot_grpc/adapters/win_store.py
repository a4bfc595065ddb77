"""The wins: a win recorded (the pool moved, the win row and its seed-funding rows
written, their leaves claimed) and a recorded one found again by its idempotency key.
Every function runs inside the caller's transaction, under the pool locks."""

from __future__ import annotations

from datetime import datetime

from jackpot_grpc.adapters.pool_store import (
    POOL_COLUMNS,
    Conn,
    claim_leaves,
    fetch_dicts,
    pool_of,
    receipt_of,
)
from jackpot_grpc.domain.model import (
    Group,
    PoolState,
    RecordedWin,
    WinCommand,
    WinOutcome,
)


async def find_win(conn: Conn, client: str, key: str) -> RecordedWin | None:
    """The win `client` recorded with this idempotency key, if any (keys are per client)."""
    rows = await fetch_dicts(
        conn,
        f"""SELECT id, jackpot_group, fingerprint, amount, pool_before, seed_top_up,
                   pool_after, created_at, coalesce(reserve_top_up, 0) AS reserve_top_up,
                   {receipt_of("wins")}
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
            reserve_top_up=row["reserve_top_up"],
        ),
        created_at=row["created_at"],
        leaf_index=row["receipt"],
    )


RESET_REASONS = {
    "reserve": "reset to seed after win, from the reserve",
    "operator": "reset to seed after win",
}


async def record_win(
    conn: Conn, command: WinCommand, outcome: WinOutcome
) -> tuple[int, datetime, int, PoolState]:
    """Move the pool, write the win and (if any) its seed top-up, the top-up's leaf right
    after the win's; return the win's id, time and leaf index, and the new pool. The
    caller holds the pool locks."""
    pools = await fetch_dicts(
        conn,
        f"""UPDATE jackpots SET
               current_amount = %(after)s,
               total_wins = total_wins + %(amount)s,
               total_seed_funding = total_seed_funding + %(top_up)s,
               reserve_amount = reserve_amount - %(from_reserve)s,
               seed_from_reserve = seed_from_reserve + %(from_reserve)s,
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
            "from_reserve": outcome.reserve_top_up,
            "user_id": command.user_id,
            "group": command.group.value,
        },
    )
    leaves = 1 + bool(outcome.reserve_top_up) + bool(outcome.operator_top_up)
    wins = await fetch_dicts(
        conn,
        f"""WITH claimed AS ({claim_leaves(str(leaves))})
            INSERT INTO wins (idempotency_key, fingerprint, client, jackpot_group, game_id,
                              user_id, requested_amount, amount, pool_before, seed_top_up,
                              pool_after, reserve_top_up, leaf_index)
            SELECT %s, %s, %s, %s, %s, %s::uuid, %s::bigint, %s::bigint, %s::bigint,
                   %s::bigint, %s::bigint, %s::bigint, first_leaf
            FROM claimed
            RETURNING id, created_at, leaf_index""",
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
            outcome.reserve_top_up,
        ),
    )
    win_id, created_at, leaf_index = wins[0]["id"], wins[0]["created_at"], wins[0]["leaf_index"]
    # The reset, one seed-funding row per source: the reserve first, then the operator,
    # their leaves right after the win's.
    next_leaf = leaf_index + 1
    for source, amount in (
        ("reserve", outcome.reserve_top_up),
        ("operator", outcome.operator_top_up),
    ):
        if amount:
            await conn.execute(
                """INSERT INTO seed_fundings (jackpot_group, amount, reason, win_id, source,
                                              leaf_index)
                   VALUES (%s, %s, %s, %s, %s, %s)""",
                (command.group.value, amount, RESET_REASONS[source], win_id, source, next_leaf),
            )
            next_leaf += 1
    return win_id, created_at, leaf_index, pool_of(pools[0])
