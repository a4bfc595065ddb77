"""The reconciliation report: per pool and day, each meter's opening amount, movements and
closing amount, and whether the identity holds, computed from the ledger rows alone (the
`jackpots` row is never read). docs/ARCHITECTURE.md, "The meters and their identity".

Two derivations meet in each day's verdict:
- the identity over the day's movements, with `contributed` recomputed from each row's
  wager and recorded rates (floor(wager × rate) + floor(wager × reserve rate)), against
  where the rows say the money went (display, reserve, overflow, diverted out, less diverted
  in): every row's split;
- the closing display amount, summed from the movements since the first row, against the
  amount the day's last contribution or win recorded (`*_after`, `pool_after`) plus the
  standalone seed fundings after it: the chain of amounts.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
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
        CASE WHEN {g}_rate IS NULL THEN {g}_amount  -- before rates were recorded: as written
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
RECONCILIATION = f"""WITH events AS (
    SELECT *, (at AT TIME ZONE 'UTC')::date AS day FROM (
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


@dataclass(frozen=True)
class PoolDay:
    """One pool's day. Amounts in minor units."""

    day: date
    group: str
    opening_display: int
    opening_reserve: int
    opening_overflow: int
    contributed: int
    display_in: int
    diverted_in: int
    diverted_out: int
    reserve_in: int
    overflow_in: int
    paid: int
    hits: int
    seed_operator: int
    seed_reserve: int
    recorded_display: int | None  # None: no row recorded the pool's amount that day

    @property
    def closing_display(self) -> int:
        moved = self.display_in + self.seed_operator + self.seed_reserve - self.paid
        return self.opening_display + moved

    @property
    def closing_reserve(self) -> int:
        return self.opening_reserve + self.reserve_in - self.seed_reserve

    @property
    def closing_overflow(self) -> int:
        return self.opening_overflow + self.overflow_in

    @property
    def identity_gap(self) -> int:
        """Δdisplay + Δreserve + Δoverflow + paid + diverted out
        − (contributed + diverted in + seed from the operator)."""
        moved = (
            (self.closing_display - self.opening_display)
            + (self.closing_reserve - self.opening_reserve)
            + (self.closing_overflow - self.opening_overflow)
        )
        left = moved + self.paid + self.diverted_out
        return left - (self.contributed + self.diverted_in + self.seed_operator)

    @property
    def display_matches(self) -> bool:
        return self.recorded_display is None or self.recorded_display == self.closing_display

    @property
    def holds(self) -> bool:
        return self.identity_gap == 0 and self.display_matches

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "day": self.day.isoformat(),
            "closing_display": self.closing_display,
            "closing_reserve": self.closing_reserve,
            "closing_overflow": self.closing_overflow,
            "identity_gap": self.identity_gap,
            "identity_holds": self.holds,
        }


COLUMNS = (
    "day",
    "group",
    "opening_display",
    "opening_reserve",
    "opening_overflow",
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
    "closing_display",
    "closing_reserve",
    "closing_overflow",
    "recorded_display",
    "identity_gap",
    "identity_holds",
)


def reconcile(conn: psycopg.Connection[Any], start: date, end: date) -> list[PoolDay]:
    """Every pool's days from `start` to `end` (inclusive, UTC), in one snapshot."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cur.execute(RECONCILIATION, {"from": start, "to": end})
        rows = cur.fetchall()
    return [
        PoolDay(
            day=r["day"],
            group=r["grp"],
            opening_display=int(r["opening_display"]),
            opening_reserve=int(r["opening_reserve"]),
            opening_overflow=int(r["opening_overflow"]),
            recorded_display=None if r["recorded_display"] is None else int(r["recorded_display"]),
            **{m: int(r[m]) for m in MOVEMENTS},
        )
        for r in rows
    ]


def as_csv(days: list[PoolDay]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for day in days:
        writer.writerow({c: day.as_dict()[c] for c in COLUMNS})
    return out.getvalue()
