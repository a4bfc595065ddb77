"""Short-lived use cases for the CLI: open a pool, run one thing, close it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from jackpot_grpc.adapters.database import create_db_pool
from jackpot_grpc.config import Settings
from jackpot_grpc.domain.model import AuditBase, LedgerAudit
from jackpot_grpc.service.jackpot import JackpotService

T = TypeVar("T")


async def run_once(
    settings: Settings, database_url: str, use: Callable[[JackpotService], Awaitable[T]]
) -> T:
    """Open a pool, run `use` on a service over it, and close the pool."""
    db_pool = create_db_pool(settings, database_url)
    await db_pool.open(wait=True, timeout=10)
    try:
        return await use(JackpotService(db_pool))
    finally:
        await db_pool.close()


async def run_audit(settings: Settings, database_url: str) -> LedgerAudit:
    return await run_once(settings, database_url, JackpotService.audit)


async def run_audit_from(
    settings: Settings, database_url: str, base: AuditBase | None
) -> tuple[LedgerAudit, AuditBase | None]:
    """run_audit, incremental from `base` (and the base the next one may go on from)."""
    return await run_once(settings, database_url, lambda service: service.audit_from(base))


def audit_report(books: LedgerAudit) -> dict[str, Any]:
    """`jackpot audit --json`: every pool and the contribution totals against the ledger."""
    return {
        "balanced": books.balanced,
        "problems": books.problems(),
        "contribution_totals": totals_report(books),
        "rows": rows_report(books),
        # Incremental (--state): the first leaf index re-proved; None: every row.
        "rows_from": books.rows_from,
        "pools": [
            {
                "group": a.group.value,
                "current_amount": a.current_amount,
                "seed_funding": a.seed_funding,
                "contributions": a.contributions,
                "wins": a.wins,
                "expected_amount": a.expected_amount,
                "discrepancy": a.discrepancy,
                "balanced": a.balanced,
                "meters": {
                    "reserve_amount": a.reserve_amount,
                    "overflow_amount": a.overflow_amount,
                    "contributed": a.recorded_total_contributed,
                    "total_paid": a.recorded_total_wins,
                    "seed_funded_by_operator": a.recorded_total_seed_funding
                    - a.recorded_seed_from_reserve,
                    "seed_funded_from_reserve": a.recorded_seed_from_reserve,
                    "diverted_in": a.recorded_total_diverted_in,
                    "diverted_out": a.recorded_total_diverted_out,
                },
                "identity_gap": a.identity_gap,
                "identity_holds": a.identity_gap == 0,
            }
            for a in books.pools
        ],
    }


def totals_report(books: LedgerAudit) -> dict[str, Any]:
    return {
        "contribution_count": books.contribution_count,
        "recorded_contribution_count": books.recorded_contribution_count,
        "total_wagered": books.total_wagered,
        "recorded_total_wagered": books.recorded_total_wagered,
        "balanced": books.totals_balanced,
    }


def rows_report(books: LedgerAudit) -> dict[str, Any]:
    """Every ledger row re-proved: the bad ones by table and id, and what was legacy."""
    return {
        "bad_count": books.rows.bad_count,
        "bad": [
            {"table": r.table, "id": r.row_id, "group": r.group.value, "problem": r.problem}
            for r in books.rows.bad
        ],
        "legacy_without_rate": books.rows.without_rate,
        "legacy_unsequenced": books.rows.unsequenced,
    }
