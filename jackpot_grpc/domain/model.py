"""Value objects of the jackpot: groups, pool state, commands and their outcomes.

(Long because it is the vocabulary every layer shares: small frozen classes, no logic.)
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import cached_property

from jackpot_grpc.domain import idempotency


class Group(enum.Enum):
    """The three pools. The value is the database key; the order is the lock order."""

    MINOR = "minor"
    MAJOR = "major"
    MEGA = "mega"

    # Members are singletons compared by identity, so the identity hash is correct, and
    # it runs in C: Enum's own __hash__ is Python, and money paths key dicts by group.
    __hash__ = object.__hash__

    @property
    def lock_order(self) -> int:
        return GROUPS.index(self)


GROUPS: tuple[Group, ...] = (Group.MINOR, Group.MAJOR, Group.MEGA)
GROUP_NAMES: tuple[str, ...] = tuple(g.value for g in GROUPS)
# The one wording of a bad group, wherever a group is parsed.
GROUP_CHOICES = "must be one of " + ", ".join(GROUP_NAMES)


class OverflowPolicy(enum.Enum):
    """Where the part of a share past the pool's cap goes. The value is the database's."""

    ACCUMULATE = "accumulate"  # onto the pool's own overflow meter
    DIVERT = "divert"  # into another pool (its `overflow_target`), as a share of it


@dataclass(frozen=True)
class PoolState:
    group: Group
    current_amount: int  # the display meter
    seed_amount: int
    max_amount: int | None
    contribution_rate: Decimal
    total_contributions: int  # what contributions added to the display (diverted-in too)
    total_wins: int
    total_seed_funding: int  # every seed funding, from the operator or the reserve
    contribution_count: int
    win_count: int
    last_won_amount: int | None
    last_won_at: datetime | None
    last_won_by_user_id: uuid.UUID | None
    version: int
    config_version: int
    updated_at: datetime
    # The reserve and overflow (docs/ARCHITECTURE.md, "The meters and their identity").
    reserve_rate: Decimal = Decimal(0)
    overflow_policy: OverflowPolicy = OverflowPolicy.ACCUMULATE
    overflow_target: Group | None = None
    reserve_amount: int = 0
    overflow_amount: int = 0
    total_contributed: int = 0  # everything wagers gave: display + reserve + overflow shares
    total_diverted_in: int = 0
    total_diverted_out: int = 0
    seed_from_reserve: int = 0
    # Out of play (SuspendPool): keeps its amount, takes no share, refuses wins.
    suspended: bool = False
    suspended_reason: str = ""
    # A config change waiting for the pool's next win (UpdateConfig apply_at_next_win).
    pending: PendingConfig | None = None

    @property
    def seed_from_operator(self) -> int:
        return self.total_seed_funding - self.seed_from_reserve

    @property
    def identity_gap(self) -> int:
        """display + reserve + overflow + paid + diverted out, less contributed + diverted
        in + operator's seed: zero when the meters tie together."""
        held = self.current_amount + self.reserve_amount + self.overflow_amount
        left = held + self.total_wins + self.total_diverted_out
        return left - (self.total_contributed + self.total_diverted_in + self.seed_from_operator)


@dataclass(frozen=True)
class PendingConfig:
    """A config change scheduled for a pool's next win: each None keeps the value in force
    then. Recorded by a `pool_lifecycle` row (`schedule_id`)."""

    contribution_rate: Decimal | None
    seed_amount: int | None
    max_amount: int | None
    clear_max_amount: bool
    actor: str
    reason: str
    client: str
    scheduled_at: datetime
    schedule_id: int
    reserve_rate: Decimal | None = None
    overflow_policy: OverflowPolicy | None = None
    overflow_target: Group | None = None

    def change(self, group: Group) -> ConfigChange:
        """The change to apply at the win (its version check was made when scheduled)."""
        return ConfigChange(
            group=group,
            contribution_rate=self.contribution_rate,
            seed_amount=self.seed_amount,
            max_amount=self.max_amount,
            clear_max_amount=self.clear_max_amount,
            expected_version=None,
            actor=self.actor,
            reason=self.reason,
            reserve_rate=self.reserve_rate,
            overflow_policy=self.overflow_policy,
            overflow_target=self.overflow_target,
        )


class LifecycleAction(enum.Enum):
    """A `pool_lifecycle` row's action (the value is stored)."""

    SUSPEND = "suspend"
    RESUME = "resume"
    SCHEDULE_CONFIG = "schedule_config"


@dataclass(frozen=True)
class WinRecord:
    """One win of the hit history (ListWins), as its ledger row records it. Seed funding
    by source: by the operator (the seed-funding row of the reset) and from the pool's
    reserve (the win's `reserve_top_up`). `ledger_index` is its leaf index in the
    tamper-evident log (its receipt, given as it was written; None only for a row from
    before receipts that is no leaf yet)."""

    win_id: int
    group: Group
    amount: int
    requested_amount: int | None
    game_id: str
    user_id: uuid.UUID
    client: str
    created_at: datetime
    pool_before: int
    pool_after: int
    seed_funded_by_operator: int
    seed_funded_from_reserve: int
    ledger_seq: int | None
    ledger_index: int | None


# An idempotency key is unique per client: (client, key) names one request.
ScopedKey = tuple[str, str]


# The three value objects made per contribution (a ContributeBatch makes thousands) write
# their fields straight into __dict__ (init=False and their own __init__): still frozen
# (setting a field raises), but the generated frozen __init__ goes through
# object.__setattr__ once per field, about 1 µs an object (BENCHMARKS.md).


@dataclass(frozen=True, init=False)
class ContributeCommand:
    game_id: str
    wager_amount: int
    idempotency_key: str | None
    client: str  # who sends it (the authenticated client): recorded, and scopes the key

    def __init__(
        self, game_id: str, wager_amount: int, idempotency_key: str | None, client: str
    ) -> None:
        fields = self.__dict__
        fields["game_id"] = game_id
        fields["wager_amount"] = wager_amount
        fields["idempotency_key"] = idempotency_key
        fields["client"] = client

    @cached_property
    def fingerprint(self) -> bytes:
        """What the idempotency key is bound to (domain.idempotency)."""
        return idempotency.contribute_fingerprint(self.game_id, self.wager_amount)


@dataclass(frozen=True, init=False)
class ContributionShares:
    """What one wager put into each pool, and each pool's amount right after; what it put
    into each reserve, and what overflowed each pool (None: nothing, the common case)."""

    amounts: dict[Group, int]
    pools_after: dict[Group, int]
    reserves: dict[Group, int] | None = None
    overflows: dict[Group, int] | None = None
    # The pools the wager was shared with: in play (not suspended) with a rate above 0.
    sharing: tuple[Group, ...] = GROUPS

    def __init__(
        self,
        amounts: dict[Group, int],
        pools_after: dict[Group, int],
        reserves: dict[Group, int] | None = None,
        overflows: dict[Group, int] | None = None,
        sharing: tuple[Group, ...] = GROUPS,
    ) -> None:
        fields = self.__dict__
        fields["amounts"] = amounts
        fields["pools_after"] = pools_after
        fields["reserves"] = reserves
        fields["overflows"] = overflows
        fields["sharing"] = sharing

    @property
    def total(self) -> int:
        return sum(self.amounts.values())


@dataclass(frozen=True, init=False)
class ContributionResult:
    contribution_id: int
    shares: ContributionShares
    created_at: datetime
    replayed: bool
    # The row's leaf index in the ledger's log (its receipt, docs/LEDGER.md); 0 on a dry run.
    leaf_index: int = 0

    def __init__(
        self,
        contribution_id: int,
        shares: ContributionShares,
        created_at: datetime,
        replayed: bool,
        leaf_index: int = 0,
    ) -> None:
        fields = self.__dict__
        fields["contribution_id"] = contribution_id
        fields["shares"] = shares
        fields["created_at"] = created_at
        fields["replayed"] = replayed
        fields["leaf_index"] = leaf_index


@dataclass(frozen=True)
class StoredContribution:
    """A ledger row found by its idempotency key: its result, and what the key is bound to."""

    result: ContributionResult
    fingerprint: bytes


@dataclass(frozen=True)
class WinCommand:
    group: Group
    game_id: str
    user_id: uuid.UUID
    win_amount: int | None
    idempotency_key: str | None
    client: str  # who sends it (the authenticated client): recorded, and scopes the key

    @cached_property
    def fingerprint(self) -> bytes:
        return idempotency.win_fingerprint(
            self.group.value, self.game_id, self.user_id, self.win_amount
        )


@dataclass(frozen=True)
class WinOutcome:
    """The pure result of paying a pool: what is paid and how the pool is refilled."""

    amount: int
    pool_before: int
    seed_top_up: int
    pool_after: int
    reserve_top_up: int = 0  # the part of seed_top_up the reserve paid; the rest the operator

    @property
    def operator_top_up(self) -> int:
        return self.seed_top_up - self.reserve_top_up


@dataclass(frozen=True)
class RecordedWin:
    """A win already in the ledger, found by its idempotency key."""

    win_id: int
    group: Group
    # What the key is bound to (domain/idempotency.py); a keyed row always has one.
    fingerprint: bytes | None
    outcome: WinOutcome
    created_at: datetime
    leaf_index: int = 0


@dataclass(frozen=True)
class WinResult:
    win_id: int
    outcome: WinOutcome
    pool: PoolState
    created_at: datetime
    replayed: bool
    # The win's leaf index (its top-up, if any, is the next leaf); 0 on a dry run.
    leaf_index: int = 0


@dataclass(frozen=True)
class PoolConfig:
    group: Group
    contribution_rate: Decimal
    seed_amount: int
    max_amount: int | None
    version: int
    reserve_rate: Decimal = Decimal(0)
    overflow_policy: OverflowPolicy = OverflowPolicy.ACCUMULATE
    overflow_target: Group | None = None
    pending: PendingConfig | None = None


@dataclass(frozen=True)
class ConfigChange:
    """An admin's change to one pool. None keeps the current value."""

    group: Group
    contribution_rate: Decimal | None
    seed_amount: int | None
    max_amount: int | None
    clear_max_amount: bool
    expected_version: int | None
    actor: str
    reason: str
    # Recorded as pending and applied in the transaction of the pool's next win.
    apply_at_next_win: bool = False
    reserve_rate: Decimal | None = None
    overflow_policy: OverflowPolicy | None = None
    overflow_target: Group | None = None


@dataclass(frozen=True)
class Statistics:
    pools: list[PoolState]
    contribution_count: int
    total_wagered: int

    @property
    def total_contributed(self) -> int:
        return sum(p.total_contributions for p in self.pools)

    @property
    def total_won(self) -> int:
        return sum(p.total_wins for p in self.pools)

    @property
    def total_pool_amount(self) -> int:
        return sum(p.current_amount for p in self.pools)

    @property
    def total_win_count(self) -> int:
        return sum(p.win_count for p in self.pools)


@dataclass(frozen=True)
class PoolAudit:
    """One pool reconciled against its ledger."""

    group: Group
    current_amount: int
    seed_funding: int
    contributions: int
    wins: int
    recorded_total_contributions: int
    recorded_total_wins: int
    recorded_total_seed_funding: int
    # The reserve and overflow meters (0014): the pool row's, and the ledger's sums.
    reserve_amount: int = 0
    overflow_amount: int = 0
    recorded_total_contributed: int = 0
    recorded_total_diverted_in: int = 0
    recorded_total_diverted_out: int = 0
    recorded_seed_from_reserve: int = 0
    reserve_in: int = 0  # reserve shares of the contributions
    reserve_seeded: int = 0  # seed fundings paid from the reserve
    overflow_kept: int = 0  # overflow onto the pool's own meter
    diverted_in: int = 0
    diverted_out: int = 0

    @property
    def expected_amount(self) -> int:
        return self.seed_funding + self.contributions - self.wins

    @property
    def discrepancy(self) -> int:
        return self.current_amount - self.expected_amount

    @property
    def contributed(self) -> int:
        """Everything the ledger's wagers gave the pool: its display shares (less what other
        pools diverted into them), its reserve shares and its overflow."""
        own_display = self.contributions - self.diverted_in
        return own_display + self.reserve_in + self.overflow_kept + self.diverted_out

    @property
    def identity_gap(self) -> int:
        """The identity over the pool row's meters (docs/ARCHITECTURE.md):
        display + reserve + overflow + paid + diverted out
            = contributed + diverted in + seed from the operator."""
        operator = self.recorded_total_seed_funding - self.recorded_seed_from_reserve
        left = self.current_amount + self.reserve_amount + self.overflow_amount
        left += self.recorded_total_wins + self.recorded_total_diverted_out
        right = self.recorded_total_contributed + self.recorded_total_diverted_in + operator
        return left - right

    def meter_problems(self) -> list[str]:
        """Each reserve/overflow meter of the pool row against the ledger, and the identity."""
        checks = (
            ("reserve", self.reserve_amount, self.reserve_in - self.reserve_seeded),
            ("overflow", self.overflow_amount, self.overflow_kept),
            ("contributed", self.recorded_total_contributed, self.contributed),
            ("diverted in", self.recorded_total_diverted_in, self.diverted_in),
            ("diverted out", self.recorded_total_diverted_out, self.diverted_out),
            ("seed from reserve", self.recorded_seed_from_reserve, self.reserve_seeded),
        )
        found = [
            f"{self.group.value} {name} meter {recorded}, but the ledger gives {ledger}"
            for name, recorded, ledger in checks
            if recorded != ledger
        ]
        # A gap the other checks already explain is not named twice.
        if self.identity_gap and not found and self.amount_balanced:
            found.append(f"{self.group.value} meters break the identity by {self.identity_gap}")
        return found

    @property
    def amount_balanced(self) -> bool:
        """The display amount and its totals against the ledger."""
        return (
            self.discrepancy == 0
            and self.recorded_total_contributions == self.contributions
            and self.recorded_total_wins == self.wins
            and self.recorded_total_seed_funding == self.seed_funding
        )

    @property
    def balanced(self) -> bool:
        return self.amount_balanced and self.identity_gap == 0 and not self.meter_problems()


@dataclass(frozen=True)
class BadRow:
    """A ledger row the audit could not re-prove: its table and id (None for a pool row of
    `jackpots`), the pool it concerns, and what is wrong."""

    table: str
    row_id: int | None
    group: Group
    problem: str

    def __str__(self) -> str:
        where = "" if self.row_id is None else f" #{self.row_id}"
        return f"{self.table}{where} [{self.group.value}]: {self.problem}"


@dataclass(frozen=True)
class RowAudit:
    """Every ledger row recomputed: the bad ones (the first of them, `bad_count` in all),
    and how many legacy rows (written before rows carried their proof) it could check
    only in part: contributions without a recorded rate, rows outside the ordered chain."""

    bad: list[BadRow] = field(default_factory=list)
    bad_count: int = 0
    without_rate: int = 0
    unsequenced: int = 0

    def legacy_note(self) -> str | None:
        """What the audit could not re-prove, or None when it proved every row."""
        if not (self.without_rate or self.unsequenced):
            return None
        return (
            f"legacy rows: {self.without_rate} contributions without a recorded rate (shares"
            f" not recomputed), {self.unsequenced} rows from before the ledger was sequenced"
            " (outside the chain of amounts; counted in the sums)"
        )


@dataclass(frozen=True)
class LedgerAudit:
    """The books reconciled: every pool, and the contribution totals GetStatistics reports
    against the count and wager sum of the ledger rows."""

    pools: list[PoolAudit]
    contribution_count: int
    recorded_contribution_count: int
    total_wagered: int
    recorded_total_wagered: int
    rows: RowAudit = field(default_factory=RowAudit)
    # Incremental: the rows re-proved were those from this leaf index on (the ones before
    # were proved by an earlier audit of this process); None: every row.
    rows_from: int | None = None

    @property
    def totals_balanced(self) -> bool:
        return (
            self.recorded_contribution_count == self.contribution_count
            and self.recorded_total_wagered == self.total_wagered
        )

    @property
    def balanced(self) -> bool:
        return (
            self.totals_balanced
            and all(p.balanced for p in self.pools)
            and self.rows.bad_count == 0
        )

    def problems(self) -> list[str]:
        """What does not balance, one phrase each; empty when the books balance."""
        found = [
            f"{p.group.value} off by {p.discrepancy}" for p in self.pools if not p.amount_balanced
        ]
        found.extend(problem for p in self.pools for problem in p.meter_problems())
        if not self.totals_balanced:
            found.append(
                f"contribution totals record {self.recorded_contribution_count} rows and"
                f" {self.recorded_total_wagered} wagered; the ledger has"
                f" {self.contribution_count} and {self.total_wagered}"
            )
        found.extend(str(row) for row in self.rows.bad)
        if self.rows.bad_count > len(self.rows.bad):
            found.append(f"... {self.rows.bad_count - len(self.rows.bad)} more bad rows")
        return found


@dataclass(frozen=True)
class AuditBase:
    """Where a clean audit left the books, for the next one to go on from (incremental):
    the leaf indexes handed out in its snapshot (`head`: rows from it on are new) and, per
    pool, the amount there (the next chain's start), the sums of seed fundings,
    contributions and wins, and the counts of contributions with a share and of wins; the
    contribution totals; each ledger table's highest id (a row below none, with no index,
    is old); the legacy counts; per pool, the ledger's sums of the reserve and overflow
    meters (`meters`: reserve shares, reserve paid into resets, overflow kept, diverted in,
    diverted out). Kept by the auditing process, never in the database."""

    head: int
    pools: dict[Group, int]
    sums: dict[Group, tuple[int, int, int]]
    counts: dict[Group, tuple[int, int]]
    contribution_count: int
    total_wagered: int
    max_ids: dict[str, int]
    without_rate: int
    unsequenced: int
    meters: dict[Group, tuple[int, int, int, int, int]] = field(default_factory=dict)
