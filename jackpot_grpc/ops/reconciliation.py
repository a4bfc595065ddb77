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

from jackpot_grpc.adapters.reconciliation import MOVEMENTS, pool_days


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
    def meters_in_range(self) -> bool:
        """No meter closes below zero: a reserve that paid out more than it held (a
        reset labelled "reserve" that the reserve never had) would still balance."""
        return self.closing_reserve >= 0 and self.closing_overflow >= 0

    @property
    def holds(self) -> bool:
        return self.identity_gap == 0 and self.display_matches and self.meters_in_range

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
    *MOVEMENTS,
    "closing_display",
    "closing_reserve",
    "closing_overflow",
    "recorded_display",
    "identity_gap",
    "identity_holds",
)


def reconcile(conn: Any, start: date, end: date) -> list[PoolDay]:
    """Every pool's days from `start` to `end` (inclusive, UTC), in one snapshot."""
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
        for r in pool_days(conn, start, end)
    ]


def as_csv(days: list[PoolDay]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for day in days:
        writer.writerow({c: day.as_dict()[c] for c in COLUMNS})
    return out.getvalue()
