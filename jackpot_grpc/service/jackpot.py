"""The jackpot's use cases. Each runs in one transaction and locks pools in lock order.

Over 400 lines because JackpotService holds every use case: the contributions (with their
batch planner), the wins, the configuration changes and the reads share its pool snapshot,
its commit bound and its metrics, and each use case's checks sit beside the transaction
that must hold them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from jackpot_grpc.adapters import (
    books_audit,
    config_store,
    database_liveness,
    pool_store,
    two_flights_async,
    win_history,
    win_store,
)
from jackpot_grpc.adapters import contribution_store as store
from jackpot_grpc.adapters.commit_bound import bounded_commit
from jackpot_grpc.adapters.database import DbPool
from jackpot_grpc.adapters.unit_of_work import (
    Isolation,
    KeyTaken,
    pipelined_transaction,
    transaction,
)
from jackpot_grpc.domain import rules
from jackpot_grpc.domain.batch import ContributionPlan, key_reused, plan_contributions
from jackpot_grpc.domain.errors import (
    DomainError,
    InvalidArgument,
    PoolSuspended,
    VersionConflict,
)
from jackpot_grpc.domain.model import (
    AuditBase,
    ConfigChange,
    ContributeCommand,
    ContributionResult,
    Group,
    LedgerAudit,
    PendingConfig,
    PoolConfig,
    PoolState,
    ScopedKey,
    Statistics,
    StoredContribution,
    WinCommand,
    WinRecord,
    WinResult,
)
from jackpot_grpc.domain.validation import (
    MAX_RATE_SUM,
    apply_config_change,
    check_divert_cycle,
    check_rate_sum,
)
from jackpot_grpc.service.ports import ServiceMetrics
from jackpot_grpc.service.snapshot import PoolSnapshot

T = TypeVar("T")


async def _settling_key_races(use_case: Callable[[], Awaitable[T]]) -> T:
    """Run a use case; if its insert lost a race for an idempotency key (the unique index
    decides), run it once more: it then finds the winner's row and replays it or refuses
    the key. DbPool locks make this rare (the key is looked up under them)."""
    try:
        return await use_case()
    except KeyTaken:
        return await use_case()


@dataclass(frozen=True)
class AppliedBatch:
    """A committed contribution batch: one result per command, the pools after (empty
    when nothing was written) and the results of the rows written."""

    results: list[ContributionResult | DomainError]
    pools_after: list[PoolState]
    written: list[ContributionResult]
    # Per pool, how many of the rows written moved it and by how much in all (the plan's
    # sums: the metrics take them rather than adding up `written` again).
    counts: Mapping[Group, int]
    sums: Mapping[Group, int]


def _applied_reason(reason: str, schedule_id: int) -> str:
    """The audit row's reason for a pending change applied at a win: its own, and which
    schedule (pool_lifecycle row) it was."""
    return f"applied at the next win (scheduled #{schedule_id}){': ' + reason if reason else ''}"


def _check_pending_still_applies(after: PoolConfig, pool: PoolState) -> None:
    """An immediate change must leave the pool's pending change applicable at the win."""
    assert pool.pending is not None
    try:
        apply_config_change(after, pool.pending.change(pool.group))
    except InvalidArgument as exc:
        violation = exc.violations[0]
        raise InvalidArgument.of(
            violation.field,
            f"the change scheduled for the next win could then not apply"
            f" ({violation.description}): schedule a new change first",
        ) from None


def _larger_rates(rate: Decimal, reserve: Decimal, pending: PendingConfig | None) -> Decimal:
    """A pool's display and reserve rates together, or those its pending change would give
    (a rate it leaves unset stays), whichever is larger."""
    now = rate + reserve
    if pending is None:
        return now
    later_rate = rate if pending.contribution_rate is None else pending.contribution_rate
    later_reserve = reserve if pending.reserve_rate is None else pending.reserve_rate
    return max(now, later_rate + later_reserve)


def _check_diverts(pools: Mapping[Group, PoolState], group: Group, target: Group | None) -> None:
    """No cycle of overflow diverts, whichever of the other pools' pending changes have
    applied by then: each other pool with its target in force and, if its pending change
    sets another, with that one too."""
    if target is None:
        return
    choices: list[list[tuple[Group, Group | None]]] = []
    for g, p in pools.items():
        if g == group:
            continue
        targets = {p.overflow_target}
        if p.pending is not None:
            with contextlib.suppress(InvalidArgument):  # it would not apply: no target then
                later = apply_config_change(config_store.config_of(p), p.pending.change(g))
                targets.add(later.overflow_target)
        choices.append([(g, t) for t in targets])
    for combination in itertools.product(*choices):
        check_divert_cycle(group, dict(combination) | {group: target})


class BatchPlanner:
    """Plans a contribution batch against the locked pools (contribution_store.Planner) and turns
    what was recorded into each command's result: written, replayed or refused."""

    def __init__(self, commands: Sequence[ContributeCommand]) -> None:
        self.commands = commands
        # Keys are scoped per client (each command's own: a batch may mix clients).
        self.keys = sorted({(c.client, c.idempotency_key) for c in commands if c.idempotency_key})
        self._plan: ContributionPlan | None = None
        self._known: dict[ScopedKey, StoredContribution] = {}

    def __call__(
        self, pools: dict[Group, PoolState], known: dict[ScopedKey, StoredContribution]
    ) -> store.BatchWrite | None:
        plan = self._plan = plan_contributions(self.commands, known, pools)
        self._known = known
        if not plan.fresh:
            return None
        fresh = [self.commands[p] for p in plan.fresh]
        return store.BatchWrite(
            plan.sums,
            plan.counts,
            fresh,
            plan.shares,
            plan.reserves,
            plan.overflows,
            plan.diverted_in,
        )

    def outcome(self, recorded: store.Recorded) -> AppliedBatch:
        plan, known = self._plan, self._known
        assert plan is not None, "the batch was never planned"
        updated, rows = recorded
        stored = {
            position: ContributionResult(
                row.row_id, shares, row.created_at, replayed=False, leaf_index=row.leaf_index
            )
            for position, shares, row in zip(plan.fresh, plan.shares, rows, strict=True)
        }
        results: list[ContributionResult | DomainError] = []
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
        return AppliedBatch(results, updated, list(stored.values()), plan.counts, plan.sums)


class JackpotService:
    def __init__(
        self,
        db_pool: DbPool,
        snapshot_ttl: float = 0.5,
        metrics: ServiceMetrics | None = None,
        *,
        max_rate_sum: Decimal = MAX_RATE_SUM,
        commit_timeout: float = 0.0,
    ) -> None:
        self.db_pool = db_pool
        # JACKPOT_COMMIT_TIMEOUT: the longest wait for a write's COMMIT (adapters.commit_bound).
        self.commit_timeout = commit_timeout
        # Told after each write this process committed: the database takes writes (the
        # readiness probe counts it as a success, entrypoints.database_health_probe).
        self.write_committed: list[Callable[[], None]] = []
        self.max_rate_sum = max_rate_sum
        # Recorded once per transaction, after its commit: never per call on the hot path.
        self.metrics = metrics
        self.snapshot = PoolSnapshot(snapshot_ttl)
        self._refresh = asyncio.Lock()
        self.wins_committed: list[Callable[[], None]] = []  # told after each win's commit

    async def contribute_many(
        self, commands: Sequence[ContributeCommand], *, validate_only: bool = False
    ) -> list[ContributionResult | DomainError]:
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
    ) -> list[ContributionResult | DomainError]:
        planner = BatchPlanner(commands)
        end = store.VALIDATE_ONLY_END if validate_only else store.COMMIT
        async with (
            pipelined_transaction(self.db_pool) as conn,
            bounded_commit(conn, self.commit_timeout) as committing,
        ):
            recorded = await two_flights_async.contribute_in_two_flights(
                conn, planner.keys, planner, end=end, committing=committing
            )
        if validate_only:  # rolled back: no id was recorded; the snapshot and metrics stay
            pools_after, rows = recorded
            unrecorded = [store.RecordedRow(0, row.created_at, 0) for row in rows]
            return planner.outcome((pools_after, unrecorded)).results
        return self.committed(planner.outcome(recorded))

    def committed(self, batch: AppliedBatch) -> list[ContributionResult | DomainError]:
        """After a batch's commit (on the event loop): the snapshot follows the pools, the
        metrics count the rows written; the callers' results."""
        if batch.pools_after:  # written (a batch of replays commits no write)
            self.committed_write()
            self.snapshot.update(batch.pools_after)
        if self.metrics is not None and batch.written:
            self.metrics.contributions_counted(len(batch.written), batch.counts, batch.sums)
        return batch.results

    def committed_write(self) -> None:
        for told in self.write_committed:
            told()

    async def win(self, command: WinCommand, *, validate_only: bool = False) -> WinResult:
        """Pay a win. A key the same client already used replays its win when the request
        is the same, and raises IdempotencyKeyReused (nothing written) when it is not.
        With `validate_only` the win is written and rolled back: the answer is the win as
        it would be paid, with win_id 0."""
        return await _settling_key_races(lambda: self._win(command, validate_only))

    async def _win(self, command: WinCommand, validate_only: bool) -> WinResult:
        async with transaction(
            self.db_pool, validate_only=validate_only, commit_timeout=self.commit_timeout
        ) as conn:
            pools = await pool_store.lock_pools(conn)
            if command.idempotency_key:
                earlier = await win_store.find_win(conn, command.client, command.idempotency_key)
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
            if pool.suspended:
                why = pool.suspended_reason or "no reason given"
                raise PoolSuspended(
                    f"the {pool.group.value} pool is suspended ({why}): resume it before"
                    " paying a win"
                )
            seed = pool.seed_amount
            if pool.pending is not None:
                # The change scheduled for this win: in force from this win on (its reset
                # is to the new seed), in the win's own transaction.
                before = config_store.config_of(pool)
                after_config = apply_config_change(before, pool.pending.change(pool.group))
                await config_store.save_config(
                    conn,
                    before,
                    after_config,
                    pool.pending.actor,
                    _applied_reason(pool.pending.reason, pool.pending.schedule_id),
                    pool.pending.client,
                    clear_pending=True,
                )
                seed = after_config.seed_amount
            outcome = rules.pay_win(
                pool.current_amount, seed, command.win_amount, pool.reserve_amount
            )
            win_id, created_at, leaf_index, after = await win_store.record_win(
                conn, command, outcome
            )
        if validate_only:  # rolled back: nothing was paid, the snapshot stays
            return WinResult(0, outcome, after, created_at, replayed=False)
        self.committed_write()
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
            async with transaction(self.db_pool) as conn:
                pools = await pool_store.read_pools(conn)
            self.snapshot.replace(pools)
            return pools

    async def statistics(self) -> Statistics:
        async with transaction(self.db_pool) as conn:
            pools = await pool_store.read_pools(conn)
            count, wagered = await books_audit.contribution_totals(conn)
        return Statistics(pools=pools, contribution_count=count, total_wagered=wagered)

    async def config(self) -> list[PoolConfig]:
        async with transaction(self.db_pool) as conn:
            return [config_store.config_of(p) for p in await pool_store.read_pools(conn)]

    async def update_config(
        self, change: ConfigChange, client: str, *, validate_only: bool = False
    ) -> tuple[PoolConfig, int]:
        """Apply `change` for the authenticated `client` (recorded in the audit row). With
        `validate_only` it is applied and rolled back: the config it would give, audit id 0.
        With `change.apply_at_next_win` it is checked now and recorded as the pool's pending
        change (the answer is the config in force, the id the pool_lifecycle row's)."""
        async with transaction(
            self.db_pool, validate_only=validate_only, commit_timeout=self.commit_timeout
        ) as conn:
            pools = await pool_store.lock_pools(conn)
            pool = pools[change.group]
            before = config_store.config_of(pool)
            if change.expected_version is not None and change.expected_version != before.version:
                raise VersionConflict(
                    f"{change.group.value} config is at version {before.version},"
                    f" not {change.expected_version}"
                )
            after = apply_config_change(before, change)
            # The bound names the rate the change raises (display or reserve).
            field = (
                "reserve_rate"
                if after.contribution_rate <= before.contribution_rate
                and after.reserve_rate > before.reserve_rate
                else "contribution_rate"
            )
            if change.apply_at_next_win:
                self._check_rates(pools, change.group, field, pending=after)
                _check_diverts(pools, change.group, after.overflow_target)
                audit_id, _ = await config_store.schedule_config(conn, change, client)
            else:
                if pool.pending is not None:
                    _check_pending_still_applies(after, pool)
                self._check_rates(pools, change.group, field, current=after)
                _check_diverts(pools, change.group, after.overflow_target)
                audit_id = await config_store.save_config(
                    conn, before, after, change.actor, change.reason, client
                )
            pools_after = await pool_store.read_pools(conn)
        # The config as it stands after (with any pending change), read in the transaction.
        answer = next(config_store.config_of(p) for p in pools_after if p.group == change.group)
        if validate_only:
            return answer, 0
        self.snapshot.update(pools_after)
        if self.metrics is not None:
            self.metrics.config_changed(change.group)
        return answer, audit_id

    def _check_rates(
        self,
        pools: dict[Group, PoolState],
        group: Group,
        field: str,
        *,
        current: PoolConfig | None = None,
        pending: PoolConfig | None = None,
    ) -> None:
        """The rate sum bound (display and reserve rates together), with every pending
        change counted: each pool at the larger of its rates' sum and its pending rates'
        sum, so applying a pending change at a win can never break it. Checked only when
        `group`'s larger sum goes up (under all three locks). `current`: the group's new
        config (its pending change kept); `pending`: its new pending change, as the config
        it would give."""
        mine = pools[group]
        was = _larger_rates(mine.contribution_rate, mine.reserve_rate, mine.pending)
        if pending is not None:
            now = max(
                mine.contribution_rate + mine.reserve_rate,
                pending.contribution_rate + pending.reserve_rate,
            )
        else:
            assert current is not None
            now = _larger_rates(current.contribution_rate, current.reserve_rate, mine.pending)
        if now > was:
            others = (
                _larger_rates(p.contribution_rate, p.reserve_rate, p.pending)
                for g, p in pools.items()
                if g != group
            )
            check_rate_sum([now, *others], self.max_rate_sum, field)

    async def set_suspended(
        self, group: Group, suspended: bool, actor: str, reason: str, client: str
    ) -> tuple[PoolState, int]:
        """SuspendPool / ResumePool: the pool after and the lifecycle row's id (0: the pool
        was already so, nothing written)."""
        async with transaction(self.db_pool, commit_timeout=self.commit_timeout) as conn:
            pools = await pool_store.lock_pools(conn)
            if pools[group].suspended == suspended:
                return pools[group], 0
            event_id, after = await config_store.set_suspended(
                conn, group, suspended, actor, reason, client
            )
        self.snapshot.update([after])
        return after, event_id

    async def wins(
        self,
        *,
        group: Group | None,
        start: datetime | None,
        end: datetime | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[WinRecord]:
        """The hit history, newest first (win_history.list_wins)."""
        async with transaction(self.db_pool) as conn:
            return await win_history.list_wins(
                conn, group=group, start=start, end=end, after=after, limit=limit
            )

    async def audit(self) -> LedgerAudit:
        # Several reads of the ledger that must agree: one snapshot.
        async with transaction(self.db_pool, isolation=Isolation.REPEATABLE_READ) as conn:
            return await books_audit.audit_ledger(conn)

    async def audit_from(self, base: AuditBase | None) -> tuple[LedgerAudit, AuditBase | None]:
        """The audit, incremental from `base` (books_audit.audit_ledger_from)."""
        async with transaction(self.db_pool, isolation=Isolation.REPEATABLE_READ) as conn:
            return await books_audit.audit_ledger_from(conn, base)

    async def ping(self) -> None:
        async with transaction(self.db_pool) as conn:
            await database_liveness.ping(conn)
