"""A pool's configuration and lifecycle: the config read off a pool, a new config
saved with its config_audit row, a pool suspended or resumed, a change scheduled for its
next win (pool_lifecycle rows). Every function runs inside the caller's transaction,
under the pool locks."""

from __future__ import annotations

import json
from typing import Any

from jackpot_grpc.adapters.pool_store import POOL_COLUMNS, Conn, claim_leaves, fetch_dicts, pool_of
from jackpot_grpc.domain.model import (
    ConfigChange,
    Group,
    LifecycleAction,
    PoolConfig,
    PoolState,
)
from jackpot_grpc.domain.validation import rate_text


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
    rows = await fetch_dicts(
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
    rows = await fetch_dicts(
        conn, LIFECYCLE_INSERT, (group.value, action.value, client, actor, reason, None)
    )
    pools = await fetch_dicts(
        conn,
        f"""UPDATE jackpots SET suspended = %s, suspended_reason = %s, version = version + 1,
               updated_at = now()
           WHERE jackpot_group = %s RETURNING {POOL_COLUMNS}""",
        (suspended, reason if suspended else "", group.value),
    )
    return rows[0]["id"], pool_of(pools[0])


async def schedule_config(conn: Conn, change: ConfigChange, client: str) -> tuple[int, PoolState]:
    """Record `change` as the pool's pending config (replacing any pending one) and ledger
    it; the lifecycle row's id and the pool after. The caller holds the pool locks."""
    rows = await fetch_dicts(
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
    pools = await fetch_dicts(
        conn,
        f"""UPDATE jackpots SET pending_config = %s::jsonb, version = version + 1,
               updated_at = now()
           WHERE jackpot_group = %s RETURNING {POOL_COLUMNS}""",
        (json.dumps(doc), change.group.value),
    )
    return schedule_id, pool_of(pools[0])
