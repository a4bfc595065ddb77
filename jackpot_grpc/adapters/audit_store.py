"""The SQL of the shared background audit: its advisory lock and `ledger_audits` (0007).

Replicas on one database audit the books one at a time and share the result: the lock is
transaction-scoped (`pg_try_advisory_xact_lock`), so it is released by the commit and holds
no session state, which keeps it correct behind PgBouncer in transaction mode. Results are
appended (never updated), so two writers can never conflict, even in REPEATABLE READ.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from jackpot_grpc.adapters import advisory_locks
from jackpot_grpc.domain.model import BadRow, Group, LedgerAudit, PoolAudit, RowAudit

Conn = AsyncConnection[Any]

# Distinct from history_store's compaction key: an audit never waits for a compaction.
AUDIT_LOCK_KEY: Final = advisory_locks.LEDGER_AUDIT

TABLE: Final = "ledger_audits"


@dataclass(frozen=True)
class RecordedAudit:
    """An audit as recorded: the books, when (database clock) and by which process."""

    books: LedgerAudit
    audited_at: datetime
    host: str
    pid: int

    @property
    def audited_by(self) -> str:
        return f"{self.host} pid {self.pid}"


async def try_lock(conn: Conn) -> bool:
    """The audit lock for the rest of the caller's transaction; False if another has it."""
    cursor = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (AUDIT_LOCK_KEY,))
    row = await cursor.fetchone()
    return bool(row and row[0])


async def database_now(conn: Conn) -> datetime:
    """The database's clock (the transaction's start): replicas compare times on one clock."""
    cursor = await conn.execute("SELECT now()")
    row = await cursor.fetchone()
    assert row is not None
    value: datetime = row[0]
    return value


async def latest(conn: Conn) -> RecordedAudit | None:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(
            "SELECT audited_at, host, pid, report FROM ledger_audits"
            " ORDER BY audited_at DESC, id DESC LIMIT 1"
        )
        row = await cursor.fetchone()
    if row is None:
        return None
    return RecordedAudit(_books(row["report"]), row["audited_at"], row["host"], row["pid"])


async def record(conn: Conn, books: LedgerAudit, host: str, pid: int) -> RecordedAudit:
    """Append `books`, audited in the caller's transaction (audited_at: its start)."""
    cursor = await conn.execute(
        "INSERT INTO ledger_audits (host, pid, balanced, report) VALUES (%s, %s, %s, %s)"
        " RETURNING audited_at",
        (host, pid, books.balanced, Jsonb(_report(books))),
    )
    row = await cursor.fetchone()
    assert row is not None
    return RecordedAudit(books, row[0], host, pid)


def _report(books: LedgerAudit) -> dict[str, Any]:
    return {
        "pools": [
            # Every field (the reserve and overflow meters too); `group` by name.
            {**{f.name: getattr(p, f.name) for f in fields(PoolAudit)}, "group": p.group.value}
            for p in books.pools
        ],
        "contribution_count": books.contribution_count,
        "recorded_contribution_count": books.recorded_contribution_count,
        "total_wagered": books.total_wagered,
        "recorded_total_wagered": books.recorded_total_wagered,
        # The rows the audit could not re-prove: a replica that adopts this result reports
        # them too (without them it would call books with bad rows balanced).
        "rows": {
            "bad": [
                {"table": r.table, "id": r.row_id, "group": r.group.value, "problem": r.problem}
                for r in books.rows.bad
            ],
            "bad_count": books.rows.bad_count,
            "without_rate": books.rows.without_rate,
            "unsequenced": books.rows.unsequenced,
        },
        "rows_from": books.rows_from,  # incremental: the first leaf index re-proved
    }


def _rows(report: dict[str, Any]) -> RowAudit:
    rows = report.get("rows")  # absent from results recorded before rows were kept
    if rows is None:
        return RowAudit()
    return RowAudit(
        bad=[BadRow(r["table"], r["id"], Group(r["group"]), r["problem"]) for r in rows["bad"]],
        bad_count=rows["bad_count"],
        without_rate=rows["without_rate"],
        unsequenced=rows["unsequenced"],
    )


def _books(report: dict[str, Any]) -> LedgerAudit:
    return LedgerAudit(
        pools=[PoolAudit(**{**p, "group": Group(p["group"])}) for p in report["pools"]],
        contribution_count=report["contribution_count"],
        recorded_contribution_count=report["recorded_contribution_count"],
        total_wagered=report["total_wagered"],
        recorded_total_wagered=report["recorded_total_wagered"],
        rows=_rows(report),
        rows_from=report.get("rows_from"),
    )
