"""The background auditor reports the newest verdict: an audit that began earlier (a
periodic tick started before an on-demand audit) never replaces a newer one when it
finishes later."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jackpot_grpc.adapters.audit_store import RecordedAudit
from jackpot_grpc.domain.model import LedgerAudit
from jackpot_grpc.jobs.audit_monitor import AuditMonitor
from jackpot_grpc.service.shared_audit import AuditTick

T0 = datetime(2026, 12, 6, 17, 39, 3, tzinfo=UTC)


def books(wagered: int, recorded: int) -> LedgerAudit:
    return LedgerAudit(
        pools=[],
        contribution_count=1,
        recorded_contribution_count=1,
        total_wagered=wagered,
        recorded_total_wagered=recorded,
    )


class Audits:
    """Audits whose results arrive in the order the test gives them."""

    def __init__(self, now: RecordedAudit, tick: RecordedAudit) -> None:
        self._now, self._tick = now, tick

    async def audit_now(self) -> RecordedAudit:
        return self._now

    async def tick(self) -> AuditTick:
        return AuditTick(self._tick, ran_here=True)


async def test_an_older_audit_finishing_later_does_not_replace_a_newer_verdict() -> None:
    newer = RecordedAudit(books(100, 105), T0 + timedelta(seconds=1), "host", 1)  # unbalanced
    older = RecordedAudit(books(100, 100), T0, "host", 1)  # balanced, from before the edit
    monitor = AuditMonitor(Audits(now=newer, tick=older), interval=300)
    await monitor.audit_now()
    await monitor.run_once()  # the periodic audit that began first ends now
    assert monitor.last is not None and not monitor.last.balanced
    assert monitor.last_at == newer.audited_at.timestamp()
    # A newer periodic audit is reported as usual.
    later = RecordedAudit(books(100, 100), T0 + timedelta(seconds=2), "host", 1)
    monitor = AuditMonitor(Audits(now=newer, tick=later), interval=300)
    await monitor.audit_now()
    await monitor.run_once()
    assert monitor.last is not None and monitor.last.balanced
