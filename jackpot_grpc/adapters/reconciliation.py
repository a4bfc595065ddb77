"""The reconciliation report's query (jackpot_grpc.ops.reconciliation): per pool and UTC
day, every meter's movements and the recorded display, from the ledger rows alone."""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
from psycopg.rows import dict_row

GROUPS = ("minor", "major", "mega")


def _contribution_events(g: str) -> str:
    received = " + ".join(
        f"CASE WHEN {p}_overflow_to = '{g}' THEN {p}_overflow ELSE 0 END" for p in GROUPS if p != g
    )
    return f"""SELECT '{g}' AS grp, ledger_seq AS seq, created_at AS at,
        -- Before rates were recorded, or before overflow was kept (a share past the cap
        -- was then cut to fit and its overflow is NULL): what was taken, as written.
        CASE WHEN {g}_rate IS NULL OR {g}_overflow IS NULL THEN {g}_amount
             ELSE floor(wager_amount * {g}_rate)
                  + coalesce(floor(wager_amount * {g}_reserve_rate), 0) END AS contributed,
        {g}_amount AS display_in, coalesce({received}, 0) AS diverted_in,
        CASE WHEN {g}_overflow_to <> '{g}' THEN {g}_overflow ELSE 0 END AS diverted_out,
        coalesce({g}_reserve, 0) AS reserve_in,
        CASE WHEN {g}_overflow_to = '{g}' THEN {g}_overflow ELSE 0 END AS overflow_in,
        0 AS paid, 0 AS hits, 0 AS seed_operator, 0 AS seed_reserve,
        {g}_after AS after, false AS standalone_seed
    FROM contributions"""


EVENTS = (
    "\n    UNION ALL\n    ".join(_contribution_events(g) for g in GROUPS)
    + """
    UNION ALL
    SELECT jackpot_group, ledger_seq, created_at, 0, 0, 0, 0, 0, 0, amount, 1, 0, 0,
        pool_after, false
    FROM wins
    UNION ALL
    SELECT jackpot_group, ledger_seq, created_at, 0, 0, 0, 0, 0, 0, 0, 0,
        CASE WHEN source = 'reserve' THEN 0 ELSE amount END,
        CASE WHEN source = 'reserve' THEN amount ELSE 0 END,
        NULL, win_id IS NULL
    FROM seed_fundings"""
)

MOVEMENTS = (
    "contributed",
    "display_in",
    "diverted_in",
    "diverted_out",
    "reserve_in",
    "overflow_in",
    "paid",
    "hits",
    "seed_operator",
    "seed_reserve",
)

# One row per pool and day from --from to --to (UTC days), every day listed. Openings are
# the sums of every earlier day's movements; the recorded display is the after of the
# day's last row that records one, plus the standalone seed fundings after it that day.
# A row's day is the latest UTC day the ledger has reached at its place in ledger order:
# `created_at` is its transaction's start, and a transaction that began just before
# midnight may take the pool locks after one that began just after it, so days by
# `created_at` alone would not be ranges of the ledger and a day's last recorded amount
# could include the next day's movements. Rows older than the sequence come first.
RECONCILIATION = f"""WITH events AS (
    SELECT *, max((at AT TIME ZONE 'UTC')::date) OVER (
        ORDER BY seq NULLS FIRST, at ROWS UNBOUNDED PRECEDING) AS day FROM (
    {EVENTS}) e),
daily AS (
    SELECT grp, day, {", ".join(f"sum({m}) AS {m}" for m in MOVEMENTS)}
    FROM events GROUP BY grp, day),
last_after AS (
    SELECT DISTINCT ON (grp, day) grp, day, after, seq
    FROM events WHERE after IS NOT NULL
    ORDER BY grp, day, seq DESC NULLS LAST, at DESC),
recorded AS (
    SELECT l.grp, l.day, l.after + coalesce((
        SELECT sum(e.seed_operator + e.seed_reserve) FROM events e
        WHERE e.grp = l.grp AND e.day = l.day AND e.standalone_seed AND e.seq > l.seq), 0)
        AS recorded_display
    FROM last_after l),
before AS (
    SELECT grp,
        coalesce(sum(display_in + seed_operator + seed_reserve - paid), 0) AS display,
        coalesce(sum(reserve_in - seed_reserve), 0) AS reserve,
        coalesce(sum(overflow_in), 0) AS overflow
    FROM daily WHERE day < %(from)s GROUP BY grp),
days AS (
    SELECT g.grp, d::date AS day
    FROM unnest(ARRAY['minor', 'major', 'mega']) AS g(grp)
    CROSS JOIN generate_series(%(from)s::date, %(to)s::date, interval '1 day') AS d),
span AS (
    SELECT days.grp, days.day,
        {", ".join(f"coalesce(daily.{m}, 0) AS {m}" for m in MOVEMENTS)},
        recorded.recorded_display
    FROM days LEFT JOIN daily USING (grp, day) LEFT JOIN recorded USING (grp, day))
SELECT span.*,
    coalesce(b.display, 0) + coalesce(sum(display_in + seed_operator + seed_reserve - paid)
        OVER w, 0) - (display_in + seed_operator + seed_reserve - paid) AS opening_display,
    coalesce(b.reserve, 0) + coalesce(sum(reserve_in - seed_reserve) OVER w, 0)
        - (reserve_in - seed_reserve) AS opening_reserve,
    coalesce(b.overflow, 0) + coalesce(sum(overflow_in) OVER w, 0) - overflow_in
        AS opening_overflow
FROM span LEFT JOIN before b USING (grp)
WINDOW w AS (PARTITION BY span.grp ORDER BY span.day)
ORDER BY span.day, array_position(ARRAY['minor', 'major', 'mega'], span.grp)"""


def pool_days(conn: psycopg.Connection[Any], start: date, end: date) -> list[dict[str, Any]]:
    """Every pool's days from `start` to `end` (inclusive, UTC), in one snapshot: the day,
    `grp`, the openings, each of MOVEMENTS and `recorded_display` (None: no row recorded
    the pool's amount that day)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cur.execute(RECONCILIATION, {"from": start, "to": end})
        return cur.fetchall()
