"""The SQL of wins, configuration, lifecycle, history, the audit and the heartbeat. Every
function runs inside the caller's transaction.

The pools' columns, reading and locking them, and the ledger's receipts are in
adapters.pool_store; a contribution batch's write in adapters.contribution_store.
Writers lock the pool rows first, always in `lock_order` (pool_store.lock_pools).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from jackpot_grpc.adapters.pool_store import POOL_COLUMNS, claim_leaves, receipt_of
from jackpot_grpc.adapters.pool_store import pool_of as _pool
from jackpot_grpc.domain.errors import Unavailable
from jackpot_grpc.domain.model import (
    GROUPS,
    AuditBase,
    BadRow,
    ConfigChange,
    Group,
    LedgerAudit,
    LifecycleAction,
    PoolAudit,
    PoolConfig,
    PoolState,
    RecordedWin,
    RowAudit,
    WinCommand,
    WinOutcome,
    WinRecord,
)
from jackpot_grpc.domain.validation import rate_text

Conn = AsyncConnection[Any]


async def _rows(
    conn: Conn, sql: str, params: Sequence[Any] | dict[str, Any] = ()
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


# --- wins --------------------------------------------------------------------------------


async def find_win(conn: Conn, client: str, key: str) -> RecordedWin | None:
    """The win `client` recorded with this idempotency key, if any (keys are per client)."""
    rows = await _rows(
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
    pools = await _rows(
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
    wins = await _rows(
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
    return win_id, created_at, leaf_index, _pool(pools[0])


# --- config ------------------------------------------------------------------------------


def config_of(pool: PoolState) -> PoolConfig:
    return PoolConfig(
        group=pool.group,
        contribution_rate=pool.contribution_rate,
        seed_amount=pool.seed_amount,
        max_amount=pool.max_amount,
        version=pool.config_version,
        reserve_rate=pool.reserve_rate,
        overflow_policy=pool.overflow_policy,
        overflow_target=pool.overflow_target,
        pending=pool.pending,
    )


def _config_json(config: PoolConfig) -> str:
    return json.dumps(
        {
            "contribution_rate": rate_text(config.contribution_rate),
            "seed_amount": config.seed_amount,
            "max_amount": config.max_amount,
            "version": config.version,
            "reserve_rate": rate_text(config.reserve_rate),
            "overflow_policy": config.overflow_policy.value,
            "overflow_target": config.overflow_target.value if config.overflow_target else None,
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
               config_version = %s, reserve_rate = %s, overflow_policy = %s,
               overflow_target = %s, version = version + 1, updated_at = now(),
               pending_config = CASE WHEN %s THEN NULL ELSE pending_config END
           WHERE jackpot_group = %s""",
        (
            after.contribution_rate,
            after.seed_amount,
            after.max_amount,
            after.version,
            after.reserve_rate,
            after.overflow_policy.value,
            after.overflow_target.value if after.overflow_target else None,
            clear_pending,
            after.group.value,
        ),
    )
    rows = await _rows(
        conn,
        f"""WITH claimed AS ({claim_leaves("1")})
            INSERT INTO config_audit (jackpot_group, actor, reason, before, after, client,
                                      leaf_index)
            SELECT %s, %s, %s, %s::jsonb, %s::jsonb, %s, first_leaf FROM claimed
            RETURNING id""",
        (after.group.value, actor, reason, _config_json(before), _config_json(after), client),
    )
    audit_id: int = rows[0]["id"]
    return audit_id


# --- pool lifecycle ----------------------------------------------------------------------

# One leaf claimed under the pool locks, like every ledger writer (claim_leaves).
LIFECYCLE_INSERT = f"""WITH claimed AS ({claim_leaves("1")})
    INSERT INTO pool_lifecycle (jackpot_group, action, client, actor, reason, pending,
        leaf_index)
    SELECT %s, %s, %s, %s, %s, %s::jsonb, first_leaf FROM claimed
    RETURNING id, changed_at, leaf_index"""


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
    if change.reserve_rate is not None:
        doc["reserve_rate"] = rate_text(change.reserve_rate)
    if change.overflow_policy is not None:
        doc["overflow_policy"] = change.overflow_policy.value
    if change.overflow_target is not None:
        doc["overflow_target"] = change.overflow_target.value
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
# in the statement (constants below), so each shape gets a plan using its index. A win's
# leaf index is its receipt (leaf_index, claimed as it was written: 0013), or for a row
# written before receipts, its leaf's.
WIN_HISTORY = """SELECT w.id, w.jackpot_group, w.amount, w.requested_amount, w.game_id,
        w.user_id, w.client, w.created_at, w.pool_before, w.pool_after, w.seed_top_up,
        coalesce(w.reserve_top_up, 0) AS reserve_top_up, w.ledger_seq,
        coalesce(w.leaf_index, l.leaf_index) AS leaf_index
    FROM wins w LEFT JOIN ledger_leaves l
        ON w.leaf_index IS NULL AND l.ledger_table = 'wins' AND l.row_id = w.id
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
            # By source: the win's reset paid from the reserve first (its seed-funding row
            # with source `reserve`), the rest by the operator (NULL before the reserve: 0).
            seed_funded_by_operator=r["seed_top_up"] - r["reserve_top_up"],
            seed_funded_from_reserve=r["reserve_top_up"],
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
    books, _ = await audit_ledger_from(conn, None)
    return books


async def audit_ledger_from(
    conn: Conn, base: AuditBase | None
) -> tuple[LedgerAudit, AuditBase | None]:
    """audit_ledger, incremental from `base` (where an earlier clean audit left the books):
    only the rows from its head on are read and re-proved, from its amounts and sums, so
    the cost grows with the rows since. Returns the audit and, when it found nothing
    wrong, the base the next one may go on from. An edit of a row before `base` is found
    only by a full audit (base None)."""
    window = _Window.of(base)
    pools = await audit_pools(conn, window)
    rows = await _rows(
        conn,
        window.sql(
            """SELECT t.contribution_count, t.total_wagered, c.n, c.wagered
               FROM contribution_totals t CROSS JOIN
                    (SELECT count(*) AS n, coalesce(sum(wager_amount), 0) AS wagered
                     FROM contributions) c"""
        ),
        window.params,
    )
    (row,) = rows
    proofs = await audit_rows(conn, window=window)
    books = LedgerAudit(
        pools=pools,
        contribution_count=int(row["n"]) + (base.contribution_count if base else 0),
        recorded_contribution_count=row["contribution_count"],
        total_wagered=int(row["wagered"]) + (base.total_wagered if base else 0),
        recorded_total_wagered=int(row["total_wagered"]),
        rows=proofs,
        rows_from=base.head if base else None,
    )
    return books, (await _next_base(conn, books, window) if books.balanced else None)


async def _next_base(conn: Conn, books: LedgerAudit, window: _Window) -> AuditBase:
    """The base a clean audit leaves, read in its snapshot."""
    (found,) = await _rows(
        conn,
        """SELECT (SELECT size FROM ledger_head) AS head,
                  (SELECT coalesce(max(id), 0) FROM contributions) AS contributions,
                  (SELECT coalesce(max(id), 0) FROM wins) AS wins,
                  (SELECT coalesce(max(id), 0) FROM seed_fundings) AS seed_fundings,
                  (SELECT coalesce(max(id), 0) FROM config_audit) AS config_audit,
                  (SELECT coalesce(max(id), 0) FROM pool_lifecycle) AS pool_lifecycle,
                  (SELECT count(*) FILTER (WHERE minor_amount > 0) FROM contributions
                   WHERE leaf_index >= %(since)s) AS c_minor,
                  (SELECT count(*) FILTER (WHERE major_amount > 0) FROM contributions
                   WHERE leaf_index >= %(since)s) AS c_major,
                  (SELECT count(*) FILTER (WHERE mega_amount > 0) FROM contributions
                   WHERE leaf_index >= %(since)s) AS c_mega""",
        {"since": window.base.head if window.base else 0},
    )
    pools = {p.group: p for p in books.pools}
    previous = window.base
    counts: dict[Group, tuple[int, int]] = {}
    for g in GROUPS:
        if previous is None:  # a full audit: the pool rows' counts are the ledger's
            counts[g] = await _full_counts(conn, g)
        else:
            shares, won = previous.counts[g]
            counts[g] = (shares + int(found[f"c_{g.value}"]), won + await _wins_since(
                conn, g, previous.head))  # fmt: skip
    return AuditBase(
        head=int(found["head"]),
        pools={g: pools[g].current_amount for g in GROUPS},
        sums={g: (pools[g].seed_funding, pools[g].contributions, pools[g].wins) for g in GROUPS},
        counts=counts,
        contribution_count=books.contribution_count,
        total_wagered=books.total_wagered,
        max_ids={t: int(found[t]) for t in LEDGER_ROW_TABLES},
        without_rate=books.rows.without_rate,
        unsequenced=books.rows.unsequenced,
        meters={
            g: (p.reserve_in, p.reserve_seeded, p.overflow_kept, p.diverted_in, p.diverted_out)
            for g, p in pools.items()
        },
    )


async def _full_counts(conn: Conn, g: Group) -> tuple[int, int]:
    (found,) = await _rows(
        conn,
        f"""SELECT (SELECT count(*) FROM contributions WHERE {g.value}_amount > 0) AS shares,
                   (SELECT count(*) FROM wins WHERE jackpot_group = %s) AS won""",
        (g.value,),
    )
    return int(found["shares"]), int(found["won"])


async def _wins_since(conn: Conn, g: Group, head: int) -> int:
    (found,) = await _rows(
        conn,
        "SELECT count(*) AS n FROM wins WHERE jackpot_group = %s AND leaf_index >= %s",
        (g.value, head),
    )
    return int(found["n"])


LEDGER_ROW_TABLES = ("contributions", "wins", "seed_fundings", "config_audit", "pool_lifecycle")
# `FROM contributions` (or wins, seed_fundings) with its alias, if any: what an incremental
# audit narrows to the rows from its base's head on.
_LEDGER_FROM = re.compile(
    r"\b(FROM|JOIN) (contributions|wins|seed_fundings)\b"
    r"(?: (?!WHERE\b|GROUP\b|ORDER\b|JOIN\b|LEFT\b|UNION\b|CROSS\b|ON\b|LIMIT\b)(\w+))?"
)
_CHAIN_START = "(SELECT amount FROM ledger_chain_starts WHERE jackpot_group = '{g}')"


@dataclass(frozen=True)
class _Window:
    """The rows an audit reads: all (base None), or those from base.head on, with the
    base's amounts as each chain's start and its counts added."""

    base: AuditBase | None
    params: dict[str, Any]

    @classmethod
    def of(cls, base: AuditBase | None) -> _Window:
        params: dict[str, Any] = {"since": base.head if base else 0}
        for g in GROUPS:
            params[f"base_c_{g.value}"] = base.counts[g][0] if base else 0
            params[f"base_w_{g.value}"] = base.counts[g][1] if base else 0
            params[f"start_{g.value}"] = base.pools[g] if base else 0
            # What the reserve held at the window's start (its shares less its resets).
            meters = base.meters.get(g) if base else None
            params[f"reserve_start_{g.value}"] = meters[0] - meters[1] if meters else 0
        for table in LEDGER_ROW_TABLES:
            # A base recorded before pool_lifecycle was a leaf table has no id for it: all.
            params[f"old_{table}"] = base.max_ids.get(table, 0) if base else 0
        return cls(base, params)

    def sql(self, text: str) -> str:
        if self.base is None:
            return text
        narrowed = _LEDGER_FROM.sub(
            lambda m: (
                f"{m[1]} (SELECT * FROM {m[2]} WHERE leaf_index >= %(since)s) AS {m[3] or m[2]}"
            ),
            text,
        )
        for g in GROUPS:
            narrowed = narrowed.replace(
                _CHAIN_START.format(g=g.value), f"%(start_{g.value})s::bigint"
            )
        return narrowed


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


# Where each pool's chain ends: the last row's `after`, moved by the rows after it that
# record none (seed fundings of their own); no row: the chain's start.
def _chain_end_of(g: str) -> str:
    return f"""SELECT '{g}' AS grp, coalesce(
        (SELECT after + (SELECT coalesce(sum(delta), 0) FROM running_{g} later
                         WHERE later.ledger_seq > last.ledger_seq)
         FROM running_{g} last WHERE after IS NOT NULL ORDER BY ledger_seq DESC LIMIT 1),
        (SELECT max(expected) FILTER (WHERE ledger_seq = (SELECT max(ledger_seq)
                                                          FROM running_{g}))
         FROM running_{g}),
        (SELECT amount FROM ledger_chain_starts WHERE jackpot_group = '{g}')) AS chain_end"""


# Only the broken links leave the windows.
CHAIN_CTES = ",\n".join(_chain_of(g.value) for g in GROUPS) + (
    ",\ndrifts AS ("
    + " UNION ALL ".join(
        f"SELECT * FROM drifts_{g.value} WHERE drift <> prev_drift" for g in GROUPS
    )
    + "),\nchain_ends AS ("
    + " UNION ALL ".join(_chain_end_of(g.value) for g in GROUPS)
    + ")"
)


# A contribution's share of pool g against floor(wager × rate), or what fitted under its
# ceiling when it records one. From 0014 a row also records each pool's overflow: the share
# offered is floor(wager × rate) plus what other pools diverted into it (their overflow
# with this pool as its `_overflow_to`); what fits goes to the display, the rest overflows
# (and only past the ceiling); the reserve share is floor(wager × reserve rate).
def _share_check_of(g: str) -> str:
    into = " + ".join(
        f"CASE WHEN {p.value}_overflow_to = '{g}' THEN {p.value}_overflow ELSE 0 END"
        for p in GROUPS
        if p.value != g
    )
    return f"""SELECT 'contributions' AS tbl, id, '{g}' AS grp,
        format('share %%s, but floor(%%s × %%s) = %%s%%s', {g}_amount, wager_amount, {g}_rate,
               floor(wager_amount * {g}_rate),
               CASE WHEN {g}_cap IS NOT NULL THEN format(' capped at %%s', {g}_cap) ELSE '' END)
            AS problem
    FROM contributions
    WHERE {g}_rate IS NOT NULL AND {g}_overflow IS NULL AND CASE WHEN {g}_cap IS NULL
        THEN {g}_amount <> floor(wager_amount * {g}_rate)
        ELSE {g}_amount >= floor(wager_amount * {g}_rate) OR {g}_amount <> greatest(0,
             least(floor(wager_amount * {g}_rate), {g}_cap - ({g}_after - {g}_amount))) END
    UNION ALL
    SELECT 'contributions', id, '{g}',
        format('share %%s and overflow %%s, but %%s was offered (floor(%%s × %%s) and %%s'
               ' diverted in)%%s; reserve %%s, but floor(%%s × %%s) = %%s',
               {g}_amount, {g}_overflow, offered, wager_amount, {g}_rate, offered - own,
               CASE WHEN {g}_cap IS NOT NULL THEN format(', capped at %%s', {g}_cap) ELSE '' END,
               {g}_reserve, wager_amount, {g}_reserve_rate,
               floor(wager_amount * {g}_reserve_rate))
    FROM (SELECT *, floor(wager_amount * {g}_rate) AS own,
                 floor(wager_amount * {g}_rate) + {into} AS offered
          FROM contributions WHERE {g}_overflow IS NOT NULL) c
    WHERE {g}_amount + {g}_overflow <> offered
       OR {g}_reserve IS DISTINCT FROM floor(wager_amount * {g}_reserve_rate)
       OR CASE WHEN {g}_cap IS NULL THEN {g}_overflow <> 0
          ELSE {g}_overflow = 0 OR {g}_amount <> greatest(0,
               least(offered, {g}_cap - ({g}_after - {g}_amount))) END"""


SHARE_CHECKS = "\n    UNION ALL\n    ".join(_share_check_of(g.value) for g in GROUPS)


# A contribution's recorded rate of pool g against the rate in force by the config history:
# the latest rate change before it (both rows sequenced: the sequence is commit order);
# before any, the first change's `before`, or the pool's rate if none; 0 while the pool is
# suspended (pool_lifecycle: from a suspend to the next resume). Rate changes from
# before config changes were sequenced (migration 0010) cannot be placed: rows that only
# they could explain are not judged. The same for the reserve rate (`key` reserve_rate, the
# row's `{g}_reserve_rate`, from migration 0014): a suspended pool's is 0 too.
def _rate_check_of(g: str, key: str = "contribution_rate") -> str:
    column = f"{g}_rate" if key == "contribution_rate" else f"{g}_{key}"
    what = "rate" if key == "contribution_rate" else "reserve rate"
    changes = (
        f"config_audit WHERE jackpot_group = '{g}' AND after ? '{key}'"
        f" AND (before ->> '{key}')::numeric"
        f" IS DISTINCT FROM (after ->> '{key}')::numeric"
    )
    return f"""SELECT 'contributions' AS tbl, id, '{g}' AS grp,
        format('{what} %%s, but %%s was in force', recorded, in_force) AS problem
    FROM (SELECT id, kind, recorded, CASE WHEN bool_or(off) OVER (PARTITION BY off_no)
              THEN 0 ELSE coalesce(max(rate) OVER (PARTITION BY grp_no),
              CASE WHEN NOT EXISTS (SELECT 1 FROM {changes} AND ledger_seq IS NULL)
                   THEN coalesce((SELECT (before ->> '{key}')::numeric
                                  FROM {changes} ORDER BY ledger_seq LIMIT 1),
                                 (SELECT {key} FROM jackpots
                                  WHERE jackpot_group = '{g}')) END) END AS in_force
          FROM (SELECT *, count(rate) OVER (ORDER BY seq) AS grp_no,
                       count(off) OVER (ORDER BY seq) AS off_no
                FROM (SELECT 'c' AS kind, id, ledger_seq AS seq, NULL::numeric AS rate,
                             {column} AS recorded, NULL::boolean AS off
                      FROM contributions WHERE ledger_seq IS NOT NULL AND {column} IS NOT NULL
                      UNION ALL
                      SELECT 'a', id, ledger_seq, (after ->> '{key}')::numeric,
                             NULL, NULL
                      FROM {changes} AND ledger_seq IS NOT NULL
                      UNION ALL  -- a suspended pool's rate is 0 until it is resumed
                      SELECT 's', id, ledger_seq, NULL, NULL, action = 'suspend'
                      FROM pool_lifecycle WHERE jackpot_group = '{g}'
                          AND action IN ('suspend', 'resume')) track) grouped) judged
    WHERE kind = 'c' AND recorded <> in_force"""


RATE_CHECKS = "\n    UNION ALL\n    ".join(
    _rate_check_of(g.value, key) for key in ("contribution_rate", "reserve_rate") for g in GROUPS
)


# A reset is paid from the reserve first: each win's reserve top-up is the least of what
# the reset needed and what pool g's reserve held just before it (its reserve shares and
# reserve top-ups in ledger order, from what it held at the start: 0, or an incremental
# audit's base; rows from before 0014 hold no reserve).
def _reserve_first_of(g: str) -> str:
    return f"""SELECT 'wins' AS tbl, id, '{g}' AS grp,
        format('reserve top-up %%s, but the reserve held %%s and the reset needed %%s',
               reserve_top_up, held, seed_top_up) AS problem
    FROM (SELECT *, %(reserve_start_{g})s::bigint + sum(delta) OVER (ORDER BY ledger_seq)
                 - delta AS held
          FROM (SELECT ledger_seq, 'c' AS kind, id, {g}_reserve AS delta,
                       NULL::bigint AS seed_top_up, NULL::bigint AS reserve_top_up
                FROM contributions WHERE ledger_seq IS NOT NULL AND {g}_reserve > 0
                UNION ALL
                SELECT ledger_seq, 'w', id, -coalesce(reserve_top_up, 0), seed_top_up,
                       reserve_top_up
                FROM wins WHERE ledger_seq IS NOT NULL AND jackpot_group = '{g}') moves) chain
    WHERE kind = 'w' AND reserve_top_up IS NOT NULL
      AND reserve_top_up <> least(held, seed_top_up)"""


RESERVE_CHECKS = "\n    UNION ALL\n    ".join(_reserve_first_of(g.value) for g in GROUPS)


# A share's ceiling is the pool's max_amount, or (no max, or a total near int64's end) the
# headroom below int64: a recorded cap below 2^62 must be the max_amount in force by the
# config history (placed like the rates above; a change may remove the max: then none).
INT64_HEADROOM_FLOOR = 1 << 62


def _cap_check_of(g: str) -> str:
    changes = (
        f"config_audit WHERE jackpot_group = '{g}' AND after ? 'max_amount'"
        " AND (before ->> 'max_amount')::bigint"
        " IS DISTINCT FROM (after ->> 'max_amount')::bigint"
    )
    return f"""SELECT 'contributions' AS tbl, id, '{g}' AS grp,
        format('cap %%s, but the max in force was %%s', recorded,
               coalesce(in_force::text, 'none')) AS problem
    FROM (SELECT id, kind, recorded, CASE WHEN grp_no > 0
                THEN max(val) OVER (PARTITION BY grp_no)
                ELSE coalesce((SELECT (before ->> 'max_amount')::bigint
                               FROM {changes} ORDER BY ledger_seq LIMIT 1),
                              (SELECT max_amount FROM jackpots WHERE jackpot_group = '{g}'))
                END AS in_force
          FROM (SELECT *, sum(is_change) OVER (ORDER BY seq) AS grp_no
                FROM (SELECT 'c' AS kind, id, ledger_seq AS seq, 0 AS is_change,
                             NULL::bigint AS val, {g}_cap AS recorded
                      FROM contributions WHERE ledger_seq IS NOT NULL AND {g}_cap IS NOT NULL
                      UNION ALL
                      SELECT 'a', id, ledger_seq, 1, (after ->> 'max_amount')::bigint, NULL
                      FROM {changes} AND ledger_seq IS NOT NULL) track) grouped) judged
    WHERE kind = 'c' AND recorded < {INT64_HEADROOM_FLOOR}
      AND recorded IS DISTINCT FROM in_force
      AND NOT EXISTS (SELECT 1 FROM {changes} AND ledger_seq IS NULL)"""


CAP_CHECKS = "\n    UNION ALL\n    ".join(_cap_check_of(g.value) for g in GROUPS)
AUDIT_ROWS = f"""WITH shares AS (
    {SHARE_CHECKS}),
rates AS (
    {RATE_CHECKS}),
reserve_first AS (
    {RESERVE_CHECKS}),
caps AS (
    {CAP_CHECKS}),
{CHAIN_CTES},
pool_ends AS (  -- each pool's current amount is where its chain ends
    SELECT 'jackpots' AS tbl, NULL::bigint AS id, j.jackpot_group AS grp,
        format('amount %%s, but its chain of ledger rows ends at %%s', j.current_amount,
               e.chain_end) AS problem
    FROM jackpots j JOIN chain_ends e ON e.grp = j.jackpot_group
    WHERE j.current_amount <> e.chain_end),
chain AS (
    SELECT tbl, id, grp,
        format('after %%s, but the amount before it was %%s and it moves %%s', after,
               expected + prev_drift - delta, delta) AS problem
    FROM drifts WHERE drift <> prev_drift),
funding AS (  -- a reset's rows: one per source (the reserve, the operator)
    SELECT win_id, count(*) AS n, count(DISTINCT coalesce(source, 'operator')) AS sources,
        sum(amount) AS funded, sum(amount) FILTER (WHERE source = 'reserve') AS from_reserve
    FROM seed_fundings WHERE win_id IS NOT NULL GROUP BY win_id),
top_ups AS (
    SELECT 'wins' AS tbl, w.id, w.jackpot_group AS grp,
        format('seed top-up %%s, but %%s', w.seed_top_up,
               CASE WHEN f.win_id IS NULL THEN 'no seed-funding row'
                    ELSE format('%%s seed-funding row(s) of %%s', f.n, f.funded) END)
            AS problem
    FROM wins w LEFT JOIN funding f ON f.win_id = w.id
    WHERE w.seed_top_up <> coalesce(f.funded, 0) OR f.n > f.sources
    UNION ALL
    SELECT 'wins', w.id, w.jackpot_group,
        format('reserve top-up %%s, but %%s of its seed funding came from the reserve',
               w.reserve_top_up, coalesce(f.from_reserve, 0))
    FROM wins w LEFT JOIN funding f ON f.win_id = w.id
    WHERE coalesce(w.reserve_top_up, 0) <> coalesce(f.from_reserve, 0)
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
               j.contribution_count, j.win_count, cc.n, coalesce(wc.n, 0) + bw.n) AS problem
    FROM jackpots j
    JOIN (SELECT 'minor' AS grp, minor + %(base_c_minor)s::bigint AS n FROM counted
          UNION ALL SELECT 'major', major + %(base_c_major)s::bigint FROM counted
          UNION ALL SELECT 'mega', mega + %(base_c_mega)s::bigint FROM counted) cc
        ON cc.grp = j.jackpot_group
    JOIN (VALUES ('minor', %(base_w_minor)s::bigint), ('major', %(base_w_major)s::bigint),
                 ('mega', %(base_w_mega)s::bigint)) bw(grp, n) ON bw.grp = j.jackpot_group
    LEFT JOIN (SELECT jackpot_group, count(*) AS n FROM wins GROUP BY jackpot_group) wc
        ON wc.jackpot_group = j.jackpot_group
    WHERE j.contribution_count <> cc.n OR j.win_count <> coalesce(wc.n, 0) + bw.n),
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
unsequenced AS (  -- every row since the log began has a leaf index (0013) or is a leaf
    SELECT t.tbl, t.id, t.grp, 'no leaf index and no leaf: written past the ledger' AS problem
    FROM (SELECT 'contributions' AS tbl, id, 'minor' AS grp, leaf_index
          FROM public.contributions WHERE id > %(old_contributions)s::bigint
          UNION ALL SELECT 'wins', id, jackpot_group, leaf_index
          FROM public.wins WHERE id > %(old_wins)s::bigint
          UNION ALL SELECT 'seed_fundings', id, jackpot_group, leaf_index
          FROM public.seed_fundings WHERE id > %(old_seed_fundings)s::bigint
          UNION ALL SELECT 'config_audit', id, jackpot_group, leaf_index
          FROM public.config_audit WHERE id > %(old_config_audit)s::bigint
          UNION ALL SELECT 'pool_lifecycle', id, jackpot_group, leaf_index
          FROM public.pool_lifecycle WHERE id > %(old_pool_lifecycle)s::bigint) t
    WHERE t.leaf_index IS NULL AND NOT EXISTS (
        SELECT 1 FROM ledger_leaves l WHERE l.ledger_table = t.tbl AND l.row_id = t.id)),
problems AS (
    SELECT * FROM shares UNION ALL SELECT * FROM chain UNION ALL SELECT * FROM top_ups
    UNION ALL SELECT * FROM counts UNION ALL SELECT * FROM win_amounts
    UNION ALL SELECT * FROM seed_top_ups UNION ALL SELECT * FROM unsequenced
    UNION ALL SELECT * FROM rates UNION ALL SELECT * FROM reserve_first
    UNION ALL SELECT * FROM caps UNION ALL SELECT * FROM pool_ends)
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


async def audit_rows(
    conn: Conn, limit: int = BAD_ROWS_NAMED, window: _Window | None = None
) -> RowAudit:
    """Every ledger row re-proved (AUDIT_ROWS), or those of `window`: the bad ones named,
    up to `limit`."""
    window = window or _Window.of(None)
    # The chain's window sorts every row of every pool: in memory, not in temporary files.
    await conn.execute(
        f"SET LOCAL work_mem = '{AUDIT_WORK_MEM}';"
        f" SET LOCAL statement_timeout = '{AUDIT_STATEMENT_TIMEOUT}'"
    )
    rows = await _rows(conn, window.sql(AUDIT_ROWS), {"limit": limit, **window.params})
    base = window.base
    legacy = (
        (await _rows(conn, AUDIT_LEGACY))[0]
        if base is None
        else {"without_rate": base.without_rate, "unsequenced": base.unsequenced}
    )
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


# Each pool's ledger sums of the contributions: display moves, reserve shares, overflow kept
# on its own meter, diverted out, diverted in (what other pools' rows sent it).
def _pool_sums(g: str) -> str:
    into = " + ".join(
        f"coalesce(sum({p.value}_overflow) FILTER (WHERE {p.value}_overflow_to = '{g}'), 0)"
        for p in GROUPS
        if p.value != g
    )
    return f"""coalesce(sum({g}_amount), 0) AS {g}, coalesce(sum({g}_reserve), 0) AS {g}_reserve,
        coalesce(sum({g}_overflow) FILTER (WHERE {g}_overflow_to = '{g}'), 0) AS {g}_kept,
        coalesce(sum({g}_overflow) FILTER (WHERE {g}_overflow_to <> '{g}'), 0) AS {g}_out,
        {into} AS {g}_in"""


AUDIT_CONTRIBUTION_SUMS = (
    "SELECT " + ",\n    ".join(_pool_sums(g.value) for g in GROUPS) + " FROM contributions"
)


async def audit_pools(conn: Conn, window: _Window | None = None) -> list[PoolAudit]:
    """Every pool reconciled against its ledger, in one consistent snapshot (incremental:
    the sums of `window`'s rows added to its base's)."""
    window = window or _Window.of(None)
    base = window.base
    (sums,) = await _rows(conn, window.sql(AUDIT_CONTRIBUTION_SUMS), window.params)
    rows = await _rows(
        conn,
        window.sql(f"""WITH w AS (SELECT jackpot_group, sum(amount) AS won FROM wins
                 GROUP BY jackpot_group),
           s AS (SELECT jackpot_group, sum(amount) AS funded,
                        coalesce(sum(amount) FILTER (WHERE source = 'reserve'), 0) AS reserved
                 FROM seed_fundings GROUP BY jackpot_group)
           SELECT {POOL_COLUMNS}, coalesce(w.won, 0) AS won, coalesce(s.funded, 0) AS funded,
                  coalesce(s.reserved, 0) AS from_reserve
           FROM jackpots j
           LEFT JOIN w USING (jackpot_group) LEFT JOIN s USING (jackpot_group)
           ORDER BY j.lock_order"""),
        window.params,
    )

    def before(group: Group, part: int) -> int:
        return base.sums[group][part] if base else 0

    def meter(group: Group, part: int) -> int:  # AuditBase.meters: 0 without a base
        return base.meters[group][part] if base and group in base.meters else 0

    audits = []
    for r in rows:
        pool, g = _pool(r), r["jackpot_group"]
        audits.append(
            PoolAudit(
                group=pool.group,
                current_amount=pool.current_amount,
                seed_funding=int(r["funded"]) + before(pool.group, 0),
                contributions=int(sums[g]) + before(pool.group, 1),
                wins=int(r["won"]) + before(pool.group, 2),
                recorded_total_contributions=pool.total_contributions,
                recorded_total_wins=pool.total_wins,
                recorded_total_seed_funding=pool.total_seed_funding,
                reserve_amount=pool.reserve_amount,
                overflow_amount=pool.overflow_amount,
                recorded_total_contributed=pool.total_contributed,
                recorded_total_diverted_in=pool.total_diverted_in,
                recorded_total_diverted_out=pool.total_diverted_out,
                recorded_seed_from_reserve=pool.seed_from_reserve,
                reserve_in=int(sums[f"{g}_reserve"]) + meter(pool.group, 0),
                reserve_seeded=int(r["from_reserve"]) + meter(pool.group, 1),
                overflow_kept=int(sums[f"{g}_kept"]) + meter(pool.group, 2),
                diverted_in=int(sums[f"{g}_in"]) + meter(pool.group, 3),
                diverted_out=int(sums[f"{g}_out"]) + meter(pool.group, 4),
            )
        )
    return audits


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
