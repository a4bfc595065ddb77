"""Replicas on one database take turns at the periodic work: one ledger audit per interval
(the others report it), and one pruner at a time (advisory locks), on real PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from jackpot_grpc.adapters import audit_store
from jackpot_grpc.adapters import history_store as store
from jackpot_grpc.adapters.database import DbPool
from jackpot_grpc.history.sampler import MetricsSampler, SamplerConfig
from jackpot_grpc.jobs.audit_monitor import AuditMonitor
from jackpot_grpc.observability.metrics import RequestMetrics
from jackpot_grpc.service.shared_audit import SharedAudit

INTERVAL = 300.0


def _audit_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT host, pid, balanced FROM ledger_audits ORDER BY id").fetchall()


def _money_from_nowhere(url: str, amount: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE jackpots SET current_amount = current_amount + %s WHERE lock_order = 0",
            (amount,),
        )


async def test_replicas_run_one_audit_per_interval_and_report_it(
    pool: DbPool, database_url: str
) -> None:
    a = SharedAudit(pool, INTERVAL, host="a", pid=1)
    b = SharedAudit(pool, INTERVAL, host="b", pid=2)

    first = await a.tick()
    assert first.ran_here and first.audit is not None and first.audit.books.balanced
    # b's turn came after a's audit: it reports a's result instead of scanning again.
    adopted = await b.tick()
    assert not adopted.ran_here and adopted.audit == first.audit
    assert adopted.audit.audited_by == "a pid 1"
    assert _audit_rows(database_url) == [("a", 1, True)]

    # a's next turn: nobody audited since its previous one, so it audits again, and
    # what it finds is what b reports next.
    _money_from_nowhere(database_url, 9)
    second = await a.tick()
    assert second.ran_here and second.audit is not None
    assert second.audit.books.problems() == [
        "minor off by 9",  # the pool against the ledger's sums, and against its chain:
        "jackpots [minor]: amount 10009, but its chain of ledger rows ends at 10000",
    ]
    reported = await b.tick()
    assert not reported.ran_here and reported.audit == second.audit
    # b's own turn, with nothing recorded since its previous tick: b audits.
    _money_from_nowhere(database_url, -9)
    third = await b.tick()
    assert third.ran_here and third.audit is not None and third.audit.books.balanced
    assert _audit_rows(database_url) == [("a", 1, True), ("a", 1, False), ("b", 2, True)]

    # An operator's audit_now always audits.
    forced = await b.audit_now()
    assert forced.audited_at > third.audit.audited_at
    assert len(_audit_rows(database_url)) == 4


async def test_a_replica_locked_out_reports_the_latest_recorded_audit(
    pool: DbPool, database_url: str
) -> None:
    a = SharedAudit(pool, INTERVAL, host="a", pid=1)
    b = SharedAudit(pool, INTERVAL, host="b", pid=2)
    with psycopg.connect(database_url) as auditing:  # another replica's audit under way
        auditing.execute("SELECT pg_advisory_xact_lock(%s)", (audit_store.AUDIT_LOCK_KEY,))
        nothing_yet = await a.tick()
        assert (nothing_yet.audit, nothing_yet.ran_here) == (None, False)
        auditing.rollback()
    recorded = await b.tick()
    assert recorded.ran_here
    with psycopg.connect(database_url) as auditing:
        auditing.execute("SELECT pg_advisory_xact_lock(%s)", (audit_store.AUDIT_LOCK_KEY,))
        locked_out = await a.tick()
        assert (locked_out.audit, locked_out.ran_here) == (recorded.audit, False)
    assert len(_audit_rows(database_url)) == 1


async def test_the_monitor_reports_the_adopted_verdict_with_its_age_and_author(
    pool: DbPool, database_url: str
) -> None:
    runs_here = AuditMonitor(SharedAudit(pool, INTERVAL, host="a", pid=1), INTERVAL)
    reports = AuditMonitor(SharedAudit(pool, INTERVAL, host="b", pid=2), INTERVAL)
    _money_from_nowhere(database_url, 5)
    await runs_here.run_once()
    await reports.run_once()
    assert (runs_here.runs, runs_here.adopted) == (1, 0)
    assert (reports.runs, reports.adopted, reports.failures) == (0, 1, 0)
    assert reports.last is not None and reports.last.problems() == [
        "minor off by 5",
        "jackpots [minor]: amount 10005, but its chain of ledger rows ends at 10000",
    ]
    assert reports.last_at == runs_here.last_at and reports.last_by == "a pid 1"
    assert reports.last_at is not None and abs(time.time() - reports.last_at) < 60


async def test_one_replica_prunes_at_a_time_and_the_newest_audit_stays(
    pool: DbPool, database_url: str
) -> None:
    now = time.time()
    old = datetime.fromtimestamp(now, UTC) - timedelta(days=40)
    with psycopg.connect(database_url) as conn:
        for host in ("old-1", "old-2", "newest-but-old"):
            conn.execute(
                "INSERT INTO ledger_audits (audited_at, host, pid, balanced, report)"
                " VALUES (%s, %s, 1, true, '{}')",
                (old, host),
            )
    sampler = MetricsSampler(pool, RequestMetrics(), SamplerConfig(retention_days=35))

    with psycopg.connect(database_url) as pruning:  # another replica is pruning
        pruning.execute("SELECT pg_advisory_xact_lock(%s)", (store.PRUNE_LOCK_KEY,))
        skipped = await sampler.prune(now)
        assert skipped.complete and skipped.deleted == dict.fromkeys(store.TIME_COLUMNS, 0)
    pruned = await sampler.prune(now)
    assert pruned.deleted[store.AUDIT_TABLE] == 2
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT host FROM ledger_audits").fetchall() == [("newest-but-old",)]
