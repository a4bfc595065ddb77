"""The jackpot's use cases. Each runs in one transaction and locks pools in lock order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from jackpot_grpc.adapters import repository as repo
from jackpot_grpc.adapters.database import Pool
from jackpot_grpc.domain import rules
from jackpot_grpc.domain.batch import plan_contributions
from jackpot_grpc.domain.errors import VersionConflict
from jackpot_grpc.domain.model import (
    ConfigChange,
    ContributeCommand,
    ContributionResult,
    Group,
    LedgerAudit,
    PoolConfig,
    PoolState,
    Statistics,
    WinCommand,
    WinResult,
)
from jackpot_grpc.domain.validation import apply_config_change
from jackpot_grpc.service.snapshot import PoolSnapshot
from jackpot_grpc.service.unit_of_work import transaction
from jackpot_grpc.telemetry import BusinessMetrics


class JackpotService:
    def __init__(
        self, pool: Pool, snapshot_ttl: float = 0.5, metrics: BusinessMetrics | None = None
    ) -> None:
        self.pool = pool
        # Recorded once per transaction, after its commit: never per call on the hot path.
        self.metrics = metrics
        self.snapshot = PoolSnapshot(snapshot_ttl)
        self._refresh = asyncio.Lock()

    async def contribute_many(
        self, commands: Sequence[ContributeCommand]
    ) -> list[ContributionResult]:
        """Apply contributions in order, in one transaction; one result per command.

        Keys already in the ledger, or repeated earlier in `commands`, replay the first
        result and change nothing. Returns only after the commit.
        """
        async with transaction(self.pool) as conn:
            keys = sorted({c.idempotency_key for c in commands if c.idempotency_key})
            pools, known = await repo.lock_pools_and_find_contributions(conn, keys)
            plan = plan_contributions(commands, known, pools)
            ids: list[tuple[int, datetime]] = []
            if plan.fresh:
                updated, ids = await repo.record_contributions(
                    conn, plan.sums, plan.counts, [commands[p] for p in plan.fresh], plan.shares
                )
        if plan.fresh:
            self.snapshot.update(updated)

        stored = {
            position: ContributionResult(row_id, shares, created_at, replayed=False)
            for position, shares, (row_id, created_at) in zip(
                plan.fresh, plan.shares, ids, strict=True
            )
        }
        results: list[ContributionResult] = []
        for position, command in enumerate(commands):
            if position in stored:
                results.append(stored[position])
            elif position in plan.replays:
                first = stored[plan.replays[position]]
                results.append(
                    ContributionResult(first.contribution_id, first.shares, first.created_at, True)
                )
            else:
                assert command.idempotency_key is not None
                results.append(known[command.idempotency_key])
        if self.metrics is not None and plan.fresh:
            self.metrics.contributions_applied(results)
        return results

    async def win(self, command: WinCommand) -> WinResult:
        async with transaction(self.pool) as conn:
            pools = await repo.lock_pools(conn)
            if command.idempotency_key:
                earlier = await repo.find_win(conn, command.idempotency_key)
                if earlier is not None:
                    return WinResult(
                        win_id=earlier["id"],
                        outcome=repo.win_outcome(earlier),
                        pool=pools[Group(earlier["jackpot_group"])],
                        created_at=earlier["created_at"],
                        replayed=True,
                    )
            pool = pools[command.group]
            outcome = rules.pay_win(pool.current_amount, pool.seed_amount, command.win_amount)
            win_id, created_at, after = await repo.record_win(conn, command, outcome)
        self.snapshot.update([after])
        result = WinResult(win_id, outcome, after, created_at, replayed=False)
        if self.metrics is not None:
            self.metrics.win_paid(result)
        return result

    async def pools(self) -> list[PoolState]:
        cached = self.snapshot.fresh()
        if cached is not None:
            return cached
        async with self._refresh:  # one database read serves every caller waiting here
            cached = self.snapshot.fresh()
            if cached is not None:
                return cached
            async with transaction(self.pool) as conn:
                pools = await repo.read_pools(conn)
            self.snapshot.replace(pools)
            return pools

    async def statistics(self) -> Statistics:
        async with transaction(self.pool) as conn:
            pools = await repo.read_pools(conn)
            count, wagered = await repo.contribution_totals(conn)
        return Statistics(pools=pools, contribution_count=count, total_wagered=wagered)

    async def config(self) -> list[PoolConfig]:
        async with transaction(self.pool) as conn:
            return [repo.config_of(p) for p in await repo.read_pools(conn)]

    async def update_config(self, change: ConfigChange) -> tuple[PoolConfig, int]:
        async with transaction(self.pool) as conn:
            pools = await repo.lock_pools(conn)
            before = repo.config_of(pools[change.group])
            if change.expected_version is not None and change.expected_version != before.version:
                raise VersionConflict(
                    f"{change.group.value} config is at version {before.version},"
                    f" not {change.expected_version}"
                )
            after = apply_config_change(before, change)
            audit_id = await repo.save_config(conn, before, after, change.actor, change.reason)
            pools_after = await repo.read_pools(conn)
        self.snapshot.update(pools_after)
        if self.metrics is not None:
            self.metrics.config_changed(change.group)
        return after, audit_id

    async def audit(self) -> LedgerAudit:
        async with transaction(self.pool) as conn:
            # The audit reads every ledger row: longer than DB_STATEMENT_TIMEOUT allows.
            await conn.execute(
                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ;"
                " SET LOCAL statement_timeout = '60s'"
            )
            return await repo.audit_ledger(conn)

    async def ping(self) -> None:
        async with transaction(self.pool) as conn:
            await repo.ping(conn)
