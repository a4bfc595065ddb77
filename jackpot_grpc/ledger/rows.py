"""Ledger rows (as the database returns them: column name to value) to leaves and to the
change each makes to the pools."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from jackpot_grpc.ledger.leaf import TABLES, EventType, encode_leaf

EVENT_OF_TABLE: Mapping[str, EventType] = {table: event for event, table in TABLES.items()}
GROUPS = ("minor", "major", "mega")
CONFIG_KEYS = (
    "contribution_rate",
    "seed_amount",
    "max_amount",
    "version",
    # 0014: absent from the documents of earlier changes.
    "reserve_rate",
    "overflow_policy",
    "overflow_target",
)
PENDING_KEYS = (
    "contribution_rate",
    "seed_amount",
    "max_amount",
    # 0014: absent from the documents of earlier schedules, and where a change keeps them.
    "reserve_rate",
    "overflow_policy",
    "overflow_target",
)


def _config_side(side: str, config: Mapping[str, Any]) -> dict[str, object]:
    out: dict[str, object] = {f"{side}_{key}": config.get(key) for key in CONFIG_KEYS}
    for key in ("contribution_rate", "reserve_rate"):
        rate = out[f"{side}_{key}"]
        if rate is not None and not isinstance(rate, Decimal):
            # jsonb holds a rate as text (or, if ever written as a number, its shortest form).
            out[f"{side}_{key}"] = Decimal(str(rate))
    return out


def leaf_values(table: str, row: Mapping[str, Any], leaf_index: int) -> dict[str, object]:
    """The values the leaf encodes: the row's own columns, its leaf index, and for a config
    change the fields of its before and after documents."""
    values: dict[str, object] = {**row, "leaf_index": leaf_index}
    if table == "config_audit":
        values |= _config_side("before", row["before"]) | _config_side("after", row["after"])
    if table == "pool_lifecycle":
        values |= _pending_fields(row["pending"])
    return values


def _pending_fields(pending: Mapping[str, Any] | None) -> dict[str, object]:
    """A scheduled change's fields (all absent on suspend and resume): each value it sets,
    and 1 when it removes the cap (0 when it does not)."""
    if pending is None:
        return {f"pending_{key}": None for key in (*PENDING_KEYS, "clear_max_amount")}
    out: dict[str, object] = {f"pending_{key}": pending.get(key) for key in PENDING_KEYS}
    for key in ("pending_contribution_rate", "pending_reserve_rate"):
        rate = out[key]
        if rate is not None and not isinstance(rate, Decimal):
            out[key] = Decimal(str(rate))
    out["pending_clear_max_amount"] = 1 if pending.get("clear_max_amount") else 0
    return out


def leaf_of(table: str, row: Mapping[str, Any], leaf_index: int) -> bytes:
    return encode_leaf(EVENT_OF_TABLE[table], leaf_values(table, row, leaf_index))


def pool_deltas(table: str, row: Mapping[str, Any]) -> dict[str, int]:
    """What the row adds to each pool (a win's top-up is its own seed funding row)."""
    if table == "contributions":
        return {g: int(row[f"{g}_amount"]) for g in GROUPS}
    if table == "wins":
        return {str(row["jackpot_group"]): -int(row["amount"])}
    if table == "seed_fundings":
        return {str(row["jackpot_group"]): int(row["amount"])}
    return {}
