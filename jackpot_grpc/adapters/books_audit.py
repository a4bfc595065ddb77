"""The books audit: every pool reconciled against its ledger (the sums), every ledger
row re-proved (ledger_row_checks.AUDIT_ROWS), the contribution totals against the rows,
in full or incrementally from where the last clean audit left the books (audit_window).
Run it in one REPEATABLE READ transaction so every part reads one snapshot."""

from __future__ import annotations

from jackpot_grpc.adapters.audit_window import LEDGER_ROW_TABLES, AuditWindow
from jackpot_grpc.adapters.ledger_row_checks import AUDIT_ROWS
from jackpot_grpc.adapters.pool_store import POOL_COLUMNS, Conn, fetch_dicts, pool_of
from jackpot_grpc.domain.model import (
    GROUPS,
    AuditBase,
    BadRow,
    Group,
    LedgerAudit,
    PoolAudit,
    RowAudit,
)


async def contribution_totals(conn: Conn) -> tuple[int, int]:
    """(number of contributions, sum of wagers), as kept with every batch."""
    rows = await fetch_dicts(
        conn, "SELECT contribution_count, total_wagered FROM contribution_totals"
    )
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
    window = AuditWindow.of(base)
    pools = await audit_pools(conn, window)
    rows = await fetch_dicts(
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


async def _next_base(conn: Conn, books: LedgerAudit, window: AuditWindow) -> AuditBase:
    """The base a clean audit leaves, read in its snapshot."""
    (found,) = await fetch_dicts(
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
    (found,) = await fetch_dicts(
        conn,
        f"""SELECT (SELECT count(*) FROM contributions WHERE {g.value}_amount > 0) AS shares,
                   (SELECT count(*) FROM wins WHERE jackpot_group = %s) AS won""",
        (g.value,),
    )
    return int(found["shares"]), int(found["won"])


async def _wins_since(conn: Conn, g: Group, head: int) -> int:
    (found,) = await fetch_dicts(
        conn,
        "SELECT count(*) AS n FROM wins WHERE jackpot_group = %s AND leaf_index >= %s",
        (g.value, head),
    )
    return int(found["n"])


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
    conn: Conn, limit: int = BAD_ROWS_NAMED, window: AuditWindow | None = None
) -> RowAudit:
    """Every ledger row re-proved (AUDIT_ROWS), or those of `window`: the bad ones named,
    up to `limit`."""
    window = window or AuditWindow.of(None)
    # The chain's window sorts every row of every pool: in memory, not in temporary files.
    await conn.execute(
        f"SET LOCAL work_mem = '{AUDIT_WORK_MEM}';"
        f" SET LOCAL statement_timeout = '{AUDIT_STATEMENT_TIMEOUT}'"
    )
    rows = await fetch_dicts(conn, window.sql(AUDIT_ROWS), {"limit": limit, **window.params})
    base = window.base
    legacy = (
        (await fetch_dicts(conn, AUDIT_LEGACY))[0]
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


async def audit_pools(conn: Conn, window: AuditWindow | None = None) -> list[PoolAudit]:
    """Every pool reconciled against its ledger, in one consistent snapshot (incremental:
    the sums of `window`'s rows added to its base's)."""
    window = window or AuditWindow.of(None)
    base = window.base
    (sums,) = await fetch_dicts(conn, window.sql(AUDIT_CONTRIBUTION_SUMS), window.params)
    rows = await fetch_dicts(
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
        pool, g = pool_of(r), r["jackpot_group"]
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
