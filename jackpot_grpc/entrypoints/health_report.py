"""The health endpoints' JSON: connection pool figures, pool rows and audits
(times and errors read as jackpot_grpc.text.report_values writes them).

Pure shaping of values into dicts; the aiohttp handlers (entrypoints.health_http) and the
Prometheus collector (entrypoints.service_collector) serve them.
"""

from __future__ import annotations

from typing import Any

from jackpot_grpc.adapters.database import DbPool
from jackpot_grpc.domain.model import PoolAudit, PoolState
from jackpot_grpc.text.report_values import iso_time

POOL_SATURATED_PERCENT = 95.0  # the runbook's warning level for connection use


def connection_pool_figures(db_pool: DbPool) -> dict[str, Any]:
    """psycopg_pool's get_stats(), with sizes and the share of connections in use."""
    stats = db_pool.get_stats()
    size = stats.get("pool_size", 0)
    available = stats.get("pool_available", 0)
    waiting = stats.get("requests_waiting", 0)
    in_use = max(size - available, 0)
    utilisation = 100.0 * in_use / db_pool.max_size if db_pool.max_size else 0.0
    if waiting and in_use >= db_pool.max_size:
        status = "exhausted"
    elif utilisation >= POOL_SATURATED_PERCENT:
        status = "saturated"
    else:
        status = "ok"
    measures = {"pool_min", "pool_max", "pool_size", "pool_available", "requests_waiting"}
    return {
        "status": status,
        "min_size": db_pool.min_size,
        "max_size": db_pool.max_size,
        "pool_size": size,
        "pool_available": available,
        "in_use": in_use,
        "requests_waiting": waiting,
        "utilization_percent": round(utilisation, 1),
        "counters": {k: v for k, v in sorted(stats.items()) if k not in measures},
    }


def pool_state(pool: PoolState) -> dict[str, Any]:
    return {
        "group": pool.group.value,
        "current_amount": pool.current_amount,
        "seed_amount": pool.seed_amount,
        "max_amount": pool.max_amount,
        "contribution_rate": str(pool.contribution_rate),
        "total_contributions": pool.total_contributions,
        "total_wins": pool.total_wins,
        "contribution_count": pool.contribution_count,
        "win_count": pool.win_count,
        "last_won_amount": pool.last_won_amount,
        "last_won_at": iso_time(pool.last_won_at),
        "updated_at": iso_time(pool.updated_at),
        "version": pool.version,
    }


def pool_audit(audit: PoolAudit) -> dict[str, Any]:
    return {
        "group": audit.group.value,
        "balanced": audit.balanced,
        "current_amount": audit.current_amount,
        "expected_amount": audit.expected_amount,
        "discrepancy": audit.discrepancy,
        "seed_funding": audit.seed_funding,
        "contributions": audit.contributions,
        "wins": audit.wins,
        "recorded_total_contributions": audit.recorded_total_contributions,
        "recorded_total_wins": audit.recorded_total_wins,
        "recorded_total_seed_funding": audit.recorded_total_seed_funding,
    }
