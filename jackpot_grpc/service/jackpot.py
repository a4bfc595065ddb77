"""The jackpot's use cases. Each runs in one transaction and locks pools in lock order."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

from jackpot_grpc.adapters import repository as repo
from jackpot_grpc.adapters.database import Pool
from jackpot_grpc.adapters.unit_of_work import (
    Isolation,
    KeyTaken,
    pipelined_transaction,
    transaction,
)
from jackpot_grpc.domain import rules
from jackpot_grpc.domain.batch import ContributionPlan, key_reused, plan_contributions
from jackpot_grpc.domain.errors import IdempotencyKeyReused, VersionConflict
from jackpot_grpc.domain.model import (
    AuditBase,
    ConfigChange,
    ContributeCommand,
    ContributionResult,
    Group,
    LedgerAudit,
    PoolConfig,
    PoolState,
    ScopedKey,
    Statistics,
    StoredContribution,
    WinCommand,
    WinResult,
)
from jackpot_grpc.domain.validation import MAX_RATE_SUM, apply_config_change, check_rate_sum
from jackpot_grpc.service.ports import ServiceMetrics
from jackpot_grpc.service.snapshot import PoolSnapshot

T = TypeVar("T")


async def _settling_key_races(use_case: Callable[[], Awaitable[T]]) -> T:
    """Run a use case; if its insert lost a race for an idempotency key (the unique index
    decides), run it once more: it then finds the winner's row and replays it or refuses
    the key. Pool locks make this rare (the key is looked up under them)."""
    try:
        return await use_case()
    except KeyTaken:
        return await use_case()


@dataclass(frozen=True)
class AppliedBatch:
    """A committed contribution batch: one result per command, the pools after (empty
    when nothing was written) and the results of the rows written."""

    results: list[ContributionResult | IdempotencyKeyReused]
    pools_after: list[PoolState]
    written: list[ContributionResult]


class BatchPlanner:
    """Plans a contribution batch against the locked pools (repository.Planner) and turns
    what was recorded into each command's result: written, replayed or refused."""

    def __init__(self, commands: Sequence[ContributeCommand]) -> None:
        self.commands = commands
        # Keys are scoped per client (each command's own: a batch may mix clients).
        self.keys = sorted({(c.client, c.idempotency_key) for c in commands if c.idempotency_key})
        self._plan: ContributionPlan | None = None
        self._known: dict[ScopedKey, StoredContribution] = {}

    def __call__(
        self, pools: dict[Group, PoolState], known: dict[ScopedKey, StoredContribution]
    ) -> repo.BatchWrite | None:
        plan = self._plan = plan_contributions(self.commands, known, pools)
        self._known = known
        if not plan.fresh:
            return None
        fresh = [self.commands[p] for p in plan.fresh]
        return repo.BatchWrite(plan.sums, plan.counts, fresh, plan.shares)

    def outcome(self, recorded: repo.Recorded) -> AppliedBatch:
        plan, known = self._plan, self._known
        assert plan is not None, "the batch was never planned"
        updated, rows = recorded
        stored = {
            position: ContributionResult(
                row.row_id, shares, row.created_at, replayed=False, leaf_index=row.leaf_index
            )
            for position, shares, row in zip(plan.fresh, plan.shares, rows, strict=True)
        }
        results: list[ContributionResult | IdempotencyKeyReused] = []
        for position, command in enumerate(self.commands):
            if position in stored:
                results.append(stored[position])
            elif position in plan.conflicts:
                results.append(plan.conflicts[position])
            elif position in plan.replays:
                first = stored[plan.replays[position]]
                results.append(dataclasses.replace(first, replayed=True))
            else:
                assert command.idempotency_key is not None
                results.append(known[command.client, command.idempotency_key].result)
        return AppliedBatch(results, updated, list(stored.values()))


class JackpotService:
    def __init__(
        self,
        pool: Pool,
        snapshot_ttl: float = 0.5,
        metrics: ServiceMetrics | None = None,
        *,
        max_rate_sum: Decimal = MAX_RATE_SUM,
    ) -> None:
        self.pool = pool
        self.max_rate_sum = max_rate_sum
        # Recorded once per transaction, after its commit: never per call on the hot path.
        self.metrics = metrics
        self.snapshot = PoolSnapshot(snapshot_ttl)
        self._refresh = asyncio.Lock()
        self.wins_committed: list[Callable[[], None]] = []  # told after each win's commit

    async def contribute_many(
        self, commands: Sequence[ContributeCommand], *, validate_only: bool = False
    ) -> list[ContributionResult | IdempotencyKeyReused]:
        """Apply contributions in order, in one transaction; one result per command.

        Keys are scoped per client (each command's own: a batch may mix clients). A key
        already in the ledger, or earlier in `commands`, replays the first result
        when the request is the same and is refused (IdempotencyKeyReused, in its place)
        when it is not; neither changes anything. Returns only after the commit.
        With `validate_only` everything runs the same and is rolled back: the results are
        what would be applied, with contribution_id 0 (nothing recorded).
        """
        return await _settling_key_races(lambda: self._contribute_many(commands, validate_only))

    async def _contribute_many(
        self, commands: Sequence[ContributeCommand], validate_only: bool
    ) -> list[ContributionResult | IdempotencyKeyReused]:
        planner = BatchPlanner(commands)
        end = repo.VALIDATE_ONLY_END if validate_only else repo.COMMIT
        async with pipelined_transaction(self.pool) as conn:
            recorded = await repo.contribute_in_two_flights(conn, planner.keys, planner, end=end)
        if validate_only:  # rolled back: no id was recorded; the snapshot and metrics stay
            pools_after, rows = recorded
            unrecorded = [repo.RecordedRow(0, row.created_at, 0) for row in rows]
            return planner.outcome((pools_after, unrecorded)).results
        return self.committed(planner.outcome(recorded))

    def committed(self, batch: AppliedBatch) -> list[ContributionResult | IdempotencyKeyReused]:
        """After a batch's commit (on the event loop): the snapshot follows the pools, the
        metrics count the rows written; the callers' results."""
        if batch.pools_after:
            self.snapshot.update(batch.pools_after)
        if self.metrics is not None and batch.written:
            self.metrics.contributions_applied(batch.written)
        return batch.results

    async def win(self, command: WinCommand, *, validate_only: bool = False) -> WinResult:
        """Pay a win. A key the same client already used replays its win when the request
        is the same, and raises IdempotencyKeyReused (nothing written) when it is not.
        With `validate_only` the win is written and rolled back: the answer is the win as
        it would be paid, with win_id 0."""
        return await _settling_key_races(lambda: self._win(command, validate_only))

    async def _win(self, command: WinCommand, validate_only: bool) -> WinResult:
        async with transaction(self.pool, validate_only=validate_only) as conn:
            pools = await repo.lock_pools(conn)
            if command.idempotency_key:
                earlier = await repo.find_win(conn, command.client, command.idempotency_key)
                if earlier is not None:
                    if earlier.fingerprint != command.fingerprint:
                        raise key_reused(command.idempotency_key, "win")
                    return WinResult(
                        win_id=earlier.win_id,
                        outcome=earlier.outcome,
                        pool=pools[earlier.group],
                        created_at=earlier.created_at,
                        replayed=True,
                        leaf_index=earlier.leaf_index,
                    )
            pool = pools[command.group]
            outcome = rules.pay_win(pool.current_amount, pool.seed_amount, command.win_amount)
            win_id, created_at, leaf_index, after = await repo.record_win(conn, command, outcome)
        if validate_only:  # rolled back: nothing was paid, the snapshot stays
            return WinResult(0, outcome, after, created_at, replayed=False)
        self.snapshot.update([after])
        for committed in self.wins_committed:  # WatchPools: hits are read from the ledger
            committed()
        result = WinResult(
            win_id, outcome, after, created_at, replayed=False, leaf_index=leaf_index
        )
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

    async def update_config(
        self, change: ConfigChange, client: str, *, validate_only: bool = False
    ) -> tuple[PoolConfig, int]:
        """Apply `change` for the authenticated `client` (recorded in the audit row). With
        `validate_only` it is applied and rolled back: the config it would give, audit id 0."""
        async with transaction(self.pool, validate_only=validate_only) as conn:
            pools = await repo.lock_pools(conn)
            before = repo.config_of(pools[change.group])
            if change.expected_version is not None and change.expected_version != before.version:
                raise VersionConflict(
                    f"{change.group.value} config is at version {before.version},"
                    f" not {change.expected_version}"
                )
            after = apply_config_change(before, change)
            if after.contribution_rate > before.contribution_rate:
                # Under the locks of all three pools: no concurrent change can slip past.
                others = (p.contribution_rate for g, p in pools.items() if g != change.group)
                check_rate_sum([after.contribution_rate, *others], self.max_rate_sum)
            audit_id = await repo.save_config(
                conn, before, after, change.actor, change.reason, client
            )
            pools_after = await repo.read_pools(conn)
        if validate_only:
            return after, 0
        self.snapshot.update(pools_after)
        if self.metrics is not None:
            self.metrics.config_changed(change.group)
        return after, audit_id

    async def audit(self) -> LedgerAudit:
        # Several reads of the ledger that must agree: one snapshot.
        async with transaction(self.pool, isolation=Isolation.REPEATABLE_READ) as conn:
            return await repo.audit_ledger(conn)

    async def audit_from(self, base: AuditBase | None) -> tuple[LedgerAudit, AuditBase | None]:
        """The audit, incremental from `base` (repository.audit_ledger_from)."""
        async with transaction(self.pool, isolation=Isolation.REPEATABLE_READ) as conn:
            return await repo.audit_ledger_from(conn, base)

    async def ping(self) -> None:
        async with transaction(self.pool) as conn:
            await repo.ping(conn)
