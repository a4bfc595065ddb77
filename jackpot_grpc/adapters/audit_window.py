"""What an audit reads: every ledger row, or (incremental) only the rows from an
earlier clean audit's head on, its amounts standing in for each chain's start and its
counts added. The audit's SQL is written for all rows; AuditWindow.sql narrows it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from jackpot_grpc.domain.model import (
    GROUPS,
    AuditBase,
)

LEDGER_ROW_TABLES = ("contributions", "wins", "seed_fundings", "config_audit", "pool_lifecycle")
# `FROM contributions` (or wins, seed_fundings) with its alias, if any: what an incremental
# audit narrows to the rows from its base's head on.
_LEDGER_FROM = re.compile(
    r"\b(FROM|JOIN) (contributions|wins|seed_fundings)\b"
    r"(?: (?!WHERE\b|GROUP\b|ORDER\b|JOIN\b|LEFT\b|UNION\b|CROSS\b|ON\b|LIMIT\b)(\w+))?"
)
_CHAIN_START = "(SELECT amount FROM ledger_chain_starts WHERE jackpot_group = '{g}')"


@dataclass(frozen=True)
class AuditWindow:
    """The rows an audit reads: all (base None), or those from base.head on, with the
    base's amounts as each chain's start and its counts added."""

    base: AuditBase | None
    params: dict[str, Any]

    @classmethod
    def of(cls, base: AuditBase | None) -> AuditWindow:
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
