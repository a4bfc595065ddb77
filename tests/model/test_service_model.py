"""A model says the service is right: random sequences of calls over real gRPC against a
real server and database, every answer and the final pools compared with a small
in-memory model of the rules, and the ledger audit passing after every run.

The model is written here on purpose, apart from jackpot_grpc.domain: shares are
floor(wager × rate) in exact Decimal, caps apply in arrival order and what passes a cap
overflows (kept on the pool's overflow meter, or diverted into another pool), the reserve
takes floor(wager × reserve rate), a win pays and tops the pool back up to its seed from
the reserve first. A suspended pool takes no share (display or reserve), receives no
overflow and refuses wins; a change scheduled for the next win (rates, reserve rate, seed,
cap) applies at that win, before the payout. Every meter and the identity tying them are
checked after each step.
If the service and the model disagree, one of them is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from google.type import decimal_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import start_server
from jackpot_grpc.service.reports import run_audit

ADMIN = (("authorization", "Bearer test-admin-token"),)
GROUPS = ("minor", "major", "mega")
PB_GROUP = {
    "minor": pb.JACKPOT_GROUP_MINOR,
    "major": pb.JACKPOT_GROUP_MAJOR,
    "mega": pb.JACKPOT_GROUP_MEGA,
}
GROUP_OF = {v: k for k, v in PB_GROUP.items()}
RPC_TIMEOUT = 10.0

# Bounded runs: the whole module stays well under two minutes on a shared 2-core machine.
MODEL_SETTINGS = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --- the model -----------------------------------------------------------------------------


def floor_share(wager: int, rate: Decimal) -> int:
    with localcontext() as ctx:
        ctx.prec = 80  # exact for any int64 wager and a rate of up to 10 places
        return int((Decimal(wager) * rate).to_integral_value(rounding=ROUND_FLOOR))


@dataclass(frozen=True)
class Scheduled:
    """A change waiting for the pool's next win (None keeps the value then in force)."""

    rate: Decimal | None
    seed: int | None
    clear_cap: bool
    reserve: Decimal | None = None


@dataclass
class ModelPool:
    amount: int
    seed: int
    cap: int | None
    rate: Decimal
    version: int
    reserve_rate: Decimal = Decimal(0)
    target: str | None = None  # DIVERT's target; None: ACCUMULATE
    # The meters (GetStatistics' PoolMeters), besides `amount` (the display).
    meters: dict[str, int] = field(default_factory=dict)

    suspended: bool = False
    pending: Scheduled | None = None

    def after(self, change: Scheduled) -> tuple[Decimal, int, int | None]:
        """(rate, seed, cap) once `change` applies."""
        return (
            self.rate if change.rate is None else change.rate,
            self.seed if change.seed is None else change.seed,
            None if change.clear_cap else self.cap,
        )


METERS = (
    "contributed",
    "reserve",
    "overflow",
    "hits",
    "paid",
    "seed_operator",
    "seed_reserve",
    "diverted_out",
    "diverted_in",
)


def read_meters(m: pb.PoolMeters) -> dict[str, int]:
    return {
        "contributed": m.contributed,
        "reserve": m.reserve_amount,
        "overflow": m.overflow_amount,
        "hits": m.hit_count,
        "paid": m.total_paid,
        "seed_operator": m.seed_funded_by_operator,
        "seed_reserve": m.seed_funded_from_reserve,
        "diverted_out": m.diverted_out,
        "diverted_in": m.diverted_in,
    }


@dataclass(frozen=True)
class Contribution:
    """What the service answered the first time a keyed contribution was written."""

    game_id: str
    wager: int
    contribution_id: int
    shares: tuple[int, int, int]
    after: tuple[int, int, int]


@dataclass(frozen=True)
class WinPaid:
    group: str
    game_id: str
    user_id: str
    requested: int | None
    win_id: int
    amount: int
    top_up: int
    remaining: int


@dataclass
class Model:
    pools: dict[str, ModelPool] = field(default_factory=dict)
    contributions: dict[str, Contribution] = field(default_factory=dict)
    wins: dict[str, WinPaid] = field(default_factory=dict)

    def target_in_play(self, name: str) -> str | None:
        """Where the pool's overflow goes: its target, unless that pool is suspended (a
        suspended pool takes nothing: the overflow stays on the pool's own meter)."""
        target = self.pools[name].target
        return None if target is None or self.pools[target].suspended else target

    def split_order(self) -> list[str]:
        """A pool before the pool it diverts to (the targets never form a cycle)."""
        order: list[str] = []
        while len(order) < len(GROUPS):
            for name in GROUPS:
                sources = [g for g in GROUPS if self.target_in_play(g) == name]
                if name not in order and all(g in order for g in sources):
                    order.append(name)
                    break
        return order

    def contribute(self, wager: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Each pool's share of `wager` (what went to its display) and each pool's amount
        after, in pool order. Past the cap a share overflows: onto the pool's overflow
        meter, or (DIVERT) into its target as part of the target's share; the reserve share
        is floor(wager × reserve rate), never capped."""
        shares: dict[str, int] = {}
        incoming = dict.fromkeys(GROUPS, 0)
        for name in self.split_order():
            pool = self.pools[name]
            # A suspended pool takes no share (display or reserve).
            own = 0 if pool.suspended else floor_share(wager, pool.rate)
            offered = own + incoming[name]
            share = offered
            if pool.cap is not None and pool.amount + share > pool.cap:
                share = max(0, pool.cap - pool.amount)
            over = offered - share
            target = self.target_in_play(name)
            if target is None:
                pool.meters["overflow"] += over
            else:
                pool.meters["diverted_out"] += over
                incoming[target] += over
                self.pools[target].meters["diverted_in"] += over
            reserve = 0 if pool.suspended else floor_share(wager, pool.reserve_rate)
            pool.meters["reserve"] += reserve
            pool.meters["contributed"] += own + reserve
            pool.amount += share
            shares[name] = share
        after = tuple(self.pools[g].amount for g in GROUPS)
        return (shares["minor"], shares["major"], shares["mega"]), (after[0], after[1], after[2])

    def sharing(self) -> list[str]:
        """The pools a wager is shared with: in play, with a rate or reserve rate above 0."""
        pools = self.pools
        return [
            g
            for g in GROUPS
            if not pools[g].suspended and (pools[g].rate > 0 or pools[g].reserve_rate > 0)
        ]

    def win(self, name: str, requested: int | None) -> tuple[int, int, int] | None:
        """(paid, top-up, remaining), or None when the win is larger than the pool. A
        pending change applies first (its seed is the one the pool is reset to); the top-up
        comes from the reserve first, then from the operator."""
        pool = self.pools[name]
        paid = pool.amount if requested is None else requested
        if paid > pool.amount:
            return None
        if pool.pending is not None:
            pool.rate, pool.seed, pool.cap = pool.after(pool.pending)
            if pool.pending.reserve is not None:
                pool.reserve_rate = pool.pending.reserve
            pool.pending = None
            pool.version += 1
        left = pool.amount - paid
        top_up = max(0, pool.seed - left)
        from_reserve = min(pool.meters["reserve"], top_up)
        pool.meters["reserve"] -= from_reserve
        pool.meters["seed_reserve"] += from_reserve
        pool.meters["seed_operator"] += top_up - from_reserve
        pool.meters["hits"] += 1
        pool.meters["paid"] += paid
        pool.amount = left + top_up
        return paid, top_up, pool.amount

    def diverts_in_a_cycle(self, name: str, target: str) -> bool:
        at: str | None = target
        while at is not None:
            if at == name:
                return True
            at = self.pools[at].target
        return False


def by_group(amounts: Any) -> tuple[int, int, int]:
    found = {GROUP_OF[a.group]: a.amount for a in amounts}
    return found["minor"], found["major"], found["mega"]


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


# --- the idempotency contract: a key reused for another request, batch counts ------------


def assert_idempotency_key_reused(error: grpc.RpcError) -> None:
    """A key reused for a different request: FAILED_PRECONDITION, ErrorInfo reason
    IDEMPOTENCY_KEY_REUSED in domain jackpot.v1; nothing written (checked by the caller)."""
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, error
    info = error_info(error)
    assert info is not None, "no google.rpc.ErrorInfo in the status details"
    assert (info.reason, info.domain) == ("IDEMPOTENCY_KEY_REUSED", "jackpot.v1")


def assert_item_key_reused(item: pb.ContributeBatchItemResult) -> None:
    """Within a batch, a key repeated with a different request is an item error, code 9."""
    assert item.WhichOneof("outcome") == "error", item
    assert item.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]


def assert_batch_counts(
    reply: pb.ContributeBatchResponse, written: int, replayed: int, rejected: int
) -> None:
    """applied_count counts only rows written; replayed_count the items answered from an
    earlier write; rejected_count the item errors."""
    counts = (reply.applied_count, reply.replayed_count, reply.rejected_count)
    assert counts == (written, replayed, rejected)


# --- the state machine -------------------------------------------------------------------------

wagers = st.one_of(st.integers(1, 5_000), st.integers(5_000, 50_000_000))
# Keys the service acknowledged, for replays (bundles are shared by name with subclasses).
contribution_keys = Bundle("contribution_keys")
win_keys = Bundle("win_keys")
rates = st.decimals(min_value=0, max_value=Decimal("0.3"), places=4, allow_nan=False)
# Three rates of at most 0.3 and three reserve rates of at most 0.03: never past the sum of 1.
reserve_rates = st.decimals(min_value=0, max_value=Decimal("0.03"), places=5, allow_nan=False)


class ServiceModel(RuleBasedStateMachine):
    """Contribute, ContributeBatch, Win, UpdateConfig and exact replays against the model."""

    stub: jackpot_pb2_grpc.JackpotServiceStub  # set by the test before it runs

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.run = uuid.uuid4().hex[:8]  # keys of earlier runs never collide with this one
        self.serial = 0

    def key(self, kind: str) -> str:
        self.serial += 1
        return f"model-{self.run}-{kind}-{self.serial}"

    @initialize()
    def read_the_service(self) -> None:
        """The model starts where the database stands (earlier runs moved the pools)."""
        config = self.stub.GetConfig(pb.GetConfigRequest(), timeout=RPC_TIMEOUT)
        stats = self.stub.GetStatistics(pb.GetStatisticsRequest(), timeout=RPC_TIMEOUT)
        amounts = {GROUP_OF[p.group]: p.current_amount for p in stats.pools}
        meters = {GROUP_OF[p.group]: read_meters(p.meters) for p in stats.pools}
        pools = self.stub.GetPools(pb.GetPoolsRequest(), timeout=RPC_TIMEOUT)
        suspended = {GROUP_OF[p.group]: p.suspended for p in pools.pools}
        for c in config.pools:
            name = GROUP_OF[c.group]
            self.model.pools[name] = ModelPool(
                amount=amounts[name],
                seed=c.seed_amount,
                cap=c.max_amount if c.HasField("max_amount") else None,
                rate=Decimal(c.contribution_rate.value),
                version=c.version,
                reserve_rate=Decimal(c.reserve_rate.value or "0"),
                target=GROUP_OF.get(c.overflow_target),
                meters=meters[name],
                suspended=suspended[name],
                pending=None
                if not c.HasField("pending_config")
                else Scheduled(
                    Decimal(c.pending_config.contribution_rate.value)
                    if c.pending_config.HasField("contribution_rate")
                    else None,
                    c.pending_config.seed_amount
                    if c.pending_config.HasField("seed_amount")
                    else None,
                    c.pending_config.clear_max_amount,
                    Decimal(c.pending_config.reserve_rate.value)
                    if c.pending_config.HasField("reserve_rate")
                    else None,
                ),
            )

    # -- contributions --

    def check_contribution(self, reply: pb.ContributeResponse, wager: int) -> Contribution:
        shares, after = self.model.contribute(wager)
        assert by_group(reply.contributions) == shares, (wager, reply)
        assert reply.total_contribution == sum(shares)
        assert by_group(reply.pool_amounts) == after
        assert [GROUP_OF[g] for g in reply.sharing_groups] == self.model.sharing()
        assert not reply.replayed
        return Contribution("", wager, reply.contribution_id, shares, after)

    @rule(target=contribution_keys, wager=wagers)
    def contribute(self, wager: int) -> str:
        key, game = self.key("c"), f"game-{self.run}"
        reply = self.stub.Contribute(
            pb.ContributeRequest(game_id=game, wager_amount=wager, idempotency_key=key),
            timeout=RPC_TIMEOUT,
        )
        first = self.check_contribution(reply, wager)
        self.model.contributions[key] = Contribution(
            game, wager, first.contribution_id, first.shares, first.after
        )
        return key

    @rule(key=contribution_keys)
    def replay_contribution(self, key: str) -> None:
        first = self.model.contributions[key]
        reply = self.stub.Contribute(
            pb.ContributeRequest(
                game_id=first.game_id, wager_amount=first.wager, idempotency_key=key
            ),
            timeout=RPC_TIMEOUT,
        )
        assert reply.replayed and reply.contribution_id == first.contribution_id
        assert by_group(reply.contributions) == first.shares
        assert by_group(reply.pool_amounts) == first.after

    @rule(batch=st.lists(wagers, min_size=1, max_size=8))
    def contribute_batch(self, batch: list[int]) -> None:
        """Fresh items only: every item written, in arrival order."""
        items = [
            pb.ContributeRequest(
                game_id=f"game-{self.run}", wager_amount=w, idempotency_key=self.key("b")
            )
            for w in batch
        ]
        reply = self.stub.ContributeBatch(
            pb.ContributeBatchRequest(contributions=items), timeout=RPC_TIMEOUT
        )
        assert (reply.applied_count, reply.rejected_count) == (len(batch), 0)
        for item, wager in zip(reply.results, batch, strict=True):
            assert item.WhichOneof("outcome") == "result"
            self.check_contribution(item.result, wager)

    # -- wins --

    @rule(
        target=win_keys,
        group=st.sampled_from(GROUPS),
        requested=st.one_of(st.none(), st.integers(1, 2_000_000)),
    )
    def win(self, group: str, requested: int | None) -> str:
        key, game, user = self.key("w"), f"game-{self.run}", str(uuid.uuid4())
        request = pb.WinRequest(
            group=PB_GROUP[group], game_id=game, user_id=user, idempotency_key=key
        )
        if requested is not None:
            request.win_amount = requested
        if self.model.pools[group].suspended:
            with pytest.raises(grpc.RpcError) as refused:
                self.stub.Win(request, timeout=RPC_TIMEOUT)
            info = error_info(refused.value)
            assert info is not None and info.reason == "POOL_SUSPENDED"
            return key  # nothing was written
        expected = self.model.win(group, requested)
        if expected is None:
            with pytest.raises(grpc.RpcError) as raised:
                self.stub.Win(request, timeout=RPC_TIMEOUT)
            assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            return key  # nothing was written: a later replay of the key is a new win
        reply = self.stub.Win(request, timeout=RPC_TIMEOUT)
        paid, top_up, remaining = expected
        assert (reply.actual_win_amount, reply.seed_top_up, reply.remaining_amount) == expected
        assert not reply.replayed
        self.model.wins[key] = WinPaid(
            group, game, user, requested, reply.win_id, paid, top_up, remaining
        )
        return key

    @rule(key=win_keys)
    def replay_win(self, key: str) -> None:
        first = self.model.wins.get(key)
        if first is None:
            return  # the key's win was refused; nothing to replay
        request = pb.WinRequest(
            group=PB_GROUP[first.group],
            game_id=first.game_id,
            user_id=first.user_id,
            idempotency_key=key,
        )
        if first.requested is not None:
            request.win_amount = first.requested
        reply = self.stub.Win(request, timeout=RPC_TIMEOUT)
        assert reply.replayed and reply.win_id == first.win_id
        assert (reply.actual_win_amount, reply.seed_top_up, reply.remaining_amount) == (
            first.amount,
            first.top_up,
            first.remaining,
        )

    # -- config --

    @rule(
        group=st.sampled_from(GROUPS),
        rate=st.one_of(st.none(), rates),
        cap=st.one_of(st.none(), st.just("clear"), st.integers(1, 5_000_000)),
        stale=st.booleans(),
        reserve=st.one_of(st.none(), reserve_rates),
        overflow=st.one_of(st.none(), st.just("accumulate"), st.sampled_from(GROUPS)),
    )
    def update_config(
        self,
        group: str,
        rate: Decimal | None,
        cap: int | str | None,
        stale: bool,
        reserve: Decimal | None,
        overflow: str | None,
    ) -> None:
        pool = self.model.pools[group]
        request = pb.UpdateConfigRequest(group=PB_GROUP[group], actor="model", reason="model test")
        if rate is not None:
            request.contribution_rate.CopyFrom(decimal_pb2.Decimal(value=str(rate)))
        if reserve is not None:
            request.reserve_rate.CopyFrom(decimal_pb2.Decimal(value=str(reserve)))
        new_target = pool.target
        if overflow == "accumulate":
            request.overflow_policy, new_target = pb.OVERFLOW_POLICY_ACCUMULATE, None
        elif overflow is not None:
            request.overflow_target, new_target = PB_GROUP[overflow], overflow
            if not stale and self.model.diverts_in_a_cycle(group, overflow):
                with pytest.raises(grpc.RpcError) as refused:
                    self.stub.UpdateConfig(request, metadata=ADMIN, timeout=RPC_TIMEOUT)
                assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                return  # a divert to itself or round a cycle: refused, nothing changed
        new_cap = pool.cap
        if cap == "clear":
            request.clear_max_amount, new_cap = True, None
        elif isinstance(cap, int):
            new_cap = pool.seed + cap  # a cap must be above the seed
            request.max_amount = new_cap
        request.expected_version = pool.version + 1 if stale else pool.version
        pending_breaks = False
        if pool.pending is not None and not stale:
            # The change scheduled for the next win must still apply on top of this one.
            after_cap = new_cap
            _, seed_then, cap_then = ModelPool(
                pool.amount, pool.seed, after_cap, pool.rate, pool.version
            ).after(pool.pending)
            pending_breaks = cap_then is not None and cap_then <= seed_then
        if pending_breaks:
            with pytest.raises(grpc.RpcError) as refused:
                self.stub.UpdateConfig(request, metadata=ADMIN, timeout=RPC_TIMEOUT)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            return
        if stale:
            with pytest.raises(grpc.RpcError) as raised:
                self.stub.UpdateConfig(request, metadata=ADMIN, timeout=RPC_TIMEOUT)
            assert raised.value.code() is grpc.StatusCode.ABORTED
            return
        reply = self.stub.UpdateConfig(request, metadata=ADMIN, timeout=RPC_TIMEOUT)
        pool.version += 1
        pool.cap = new_cap
        pool.target = new_target
        if rate is not None:
            pool.rate = rate
        if reserve is not None:
            pool.reserve_rate = reserve
        assert Decimal(reply.config.reserve_rate.value) == pool.reserve_rate
        assert GROUP_OF.get(reply.config.overflow_target) == pool.target
        assert reply.config.version == pool.version
        assert Decimal(reply.config.contribution_rate.value) == pool.rate
        assert (
            reply.config.max_amount if reply.config.HasField("max_amount") else None
        ) == pool.cap

    # -- lifecycle: suspend, resume, changes at the next win --

    @rule(group=st.sampled_from(GROUPS), suspend=st.booleans())
    def suspend_or_resume(self, group: str, suspend: bool) -> None:
        pool = self.model.pools[group]
        if suspend:
            reply = self.stub.SuspendPool(
                pb.SuspendPoolRequest(group=PB_GROUP[group], reason="model"),
                metadata=ADMIN,
                timeout=RPC_TIMEOUT,
            )
        else:
            reply = self.stub.ResumePool(
                pb.ResumePoolRequest(group=PB_GROUP[group]), metadata=ADMIN, timeout=RPC_TIMEOUT
            )
        changed = pool.suspended != suspend
        pool.suspended = suspend
        assert (reply.event_id > 0) == changed
        assert reply.pool.suspended == suspend
        assert reply.pool.current_amount == pool.amount  # it keeps its amount

    @rule(
        group=st.sampled_from(GROUPS),
        rate=st.one_of(st.none(), rates),
        seed=st.one_of(st.none(), st.integers(1, 3_000_000)),
        clear_cap=st.booleans(),
        reserve=st.one_of(st.none(), reserve_rates),
    )
    def schedule_config(
        self,
        group: str,
        rate: Decimal | None,
        seed: int | None,
        clear_cap: bool,
        reserve: Decimal | None,
    ) -> None:
        pool = self.model.pools[group]
        change = Scheduled(rate, seed, clear_cap, reserve)
        request = pb.UpdateConfigRequest(
            group=PB_GROUP[group],
            apply_at_next_win=True,
            clear_max_amount=clear_cap,
            expected_version=pool.version,
            reason="model schedule",
        )
        if rate is not None:
            request.contribution_rate.CopyFrom(decimal_pb2.Decimal(value=str(rate)))
        if seed is not None:
            request.seed_amount = seed
        if reserve is not None:
            request.reserve_rate.CopyFrom(decimal_pb2.Decimal(value=str(reserve)))
        _, seed_then, cap_then = pool.after(change)
        if cap_then is not None and cap_then <= seed_then:
            with pytest.raises(grpc.RpcError) as refused:
                self.stub.UpdateConfig(request, metadata=ADMIN, timeout=RPC_TIMEOUT)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            return
        reply = self.stub.UpdateConfig(request, metadata=ADMIN, timeout=RPC_TIMEOUT)
        pool.pending = change
        assert reply.config.version == pool.version  # nothing changes until the win
        assert Decimal(reply.config.contribution_rate.value) == pool.rate
        shown = reply.config.pending_config
        assert shown.schedule_id == reply.audit_id > 0
        assert (Decimal(shown.contribution_rate.value) if rate is not None else None) == rate
        assert (shown.seed_amount if shown.HasField("seed_amount") else None) == seed
        has_reserve = shown.HasField("reserve_rate")
        assert (Decimal(shown.reserve_rate.value) if has_reserve else None) == reserve

    # -- the pools, always --

    @invariant()
    def pools_match_the_model(self) -> None:
        if not self.model.pools:
            return
        # GetStatistics reads the database (GetPools may answer from a short-lived snapshot).
        stats = self.stub.GetStatistics(pb.GetStatisticsRequest(), timeout=RPC_TIMEOUT)
        actual = {GROUP_OF[p.group]: p.current_amount for p in stats.pools}
        assert actual == {g: p.amount for g, p in self.model.pools.items()}
        meters = {GROUP_OF[p.group]: read_meters(p.meters) for p in stats.pools}
        assert meters == {g: p.meters for g, p in self.model.pools.items()}
        for name, m in meters.items():  # the identity (docs/ARCHITECTURE.md)
            held = actual[name] + m["reserve"] + m["overflow"] + m["paid"] + m["diverted_out"]
            assert held == m["contributed"] + m["diverted_in"] + m["seed_operator"], name
        config = self.stub.GetConfig(pb.GetConfigRequest(), timeout=RPC_TIMEOUT)
        for c in config.pools:
            pool = self.model.pools[GROUP_OF[c.group]]
            assert (Decimal(c.contribution_rate.value), c.seed_amount, c.version) == (
                pool.rate,
                pool.seed,
                pool.version,
            )
            assert Decimal(c.reserve_rate.value or "0") == pool.reserve_rate
            assert (c.max_amount if c.HasField("max_amount") else None) == pool.cap
            assert c.HasField("pending_config") == (pool.pending is not None)


class ServiceModelPerContract(ServiceModel):
    """ServiceModel, plus the idempotency contract: mismatched replays, and batches holding
    replays of earlier keys and repeats of their own keys (same or different request)."""

    @rule(key=contribution_keys, wager=wagers)
    def contribute_mismatch(self, key: str, wager: int) -> None:
        first = self.model.contributions[key]
        if wager == first.wager:
            wager += 1
        with pytest.raises(grpc.RpcError) as raised:
            self.stub.Contribute(
                pb.ContributeRequest(
                    game_id=first.game_id, wager_amount=wager, idempotency_key=key
                ),
                timeout=RPC_TIMEOUT,
            )
        assert_idempotency_key_reused(raised.value)

    @rule(key=win_keys, other=st.sampled_from(GROUPS))
    def win_mismatch(self, key: str, other: str) -> None:
        first = self.model.wins.get(key)
        if first is None:
            return
        request = pb.WinRequest(
            group=PB_GROUP[other],
            game_id=first.game_id,
            user_id=str(uuid.uuid4()),
            idempotency_key=key,
        )
        with pytest.raises(grpc.RpcError) as raised:
            self.stub.Win(request, timeout=RPC_TIMEOUT)
        assert_idempotency_key_reused(raised.value)

    @rule(
        earlier=st.lists(contribution_keys, max_size=3),
        batch=st.lists(
            st.tuples(wagers, st.sampled_from(["fresh", "repeat", "mismatch"])),
            min_size=1,
            max_size=6,
        ),
    )
    def contribute_batch_with_replays(
        self, earlier: list[str], batch: list[tuple[int, str]]
    ) -> None:
        items: list[pb.ContributeRequest] = []
        expected: list[tuple[str, int, str]] = []  # (kind, wager, key of the first)
        game = f"game-{self.run}"
        for key in earlier:  # replays of keys already in the ledger
            first = self.model.contributions[key]
            items.append(
                pb.ContributeRequest(
                    game_id=first.game_id, wager_amount=first.wager, idempotency_key=key
                )
            )
            expected.append(("ledger", first.wager, key))
        fresh_in_batch: list[tuple[str, int]] = []
        for wager, kind in batch:
            if kind == "fresh" or not fresh_in_batch:
                key = self.key("r")
                fresh_in_batch.append((key, wager))
                items.append(
                    pb.ContributeRequest(game_id=game, wager_amount=wager, idempotency_key=key)
                )
                expected.append(("fresh", wager, key))
            else:
                key, first_wager = fresh_in_batch[0]
                sent = first_wager if kind == "repeat" else first_wager + wager
                items.append(
                    pb.ContributeRequest(game_id=game, wager_amount=sent, idempotency_key=key)
                )
                expected.append((kind, sent, key))
        reply = self.stub.ContributeBatch(
            pb.ContributeBatchRequest(contributions=items), timeout=RPC_TIMEOUT
        )
        written_now: dict[str, pb.ContributeResponse] = {}
        for item, (kind, wager, key) in zip(reply.results, expected, strict=True):
            if kind == "ledger":
                first = self.model.contributions[key]
                assert item.result.replayed and item.result.contribution_id == first.contribution_id
            elif kind == "fresh":
                first = self.check_contribution(item.result, wager)
                written_now[key] = item.result
                self.model.contributions[key] = Contribution(
                    game, wager, first.contribution_id, first.shares, first.after
                )
            elif kind == "repeat":
                assert item.result.replayed
                assert item.result.contribution_id == written_now[key].contribution_id
            else:
                assert_item_key_reused(item)
        counts = [kind for kind, _, _ in expected]
        assert_batch_counts(
            reply,
            written=counts.count("fresh"),
            replayed=counts.count("ledger") + counts.count("repeat"),
            rejected=counts.count("mismatch"),
        )


# --- running it ----------------------------------------------------------------------------


@contextlib.contextmanager
def server_in_thread(settings_: Settings, database_url: str) -> Iterator[int]:
    """A real server on its own event loop in a thread (hypothesis' state machines are
    synchronous): yields its port, stops it on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="model-server", daemon=True)
    thread.start()
    running = asyncio.run_coroutine_threadsafe(
        start_server(settings_, database_url, port=0), loop
    ).result(30)
    try:
        yield running.port
    finally:
        asyncio.run_coroutine_threadsafe(running.stop(grace=1.0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def run_model(machine: type[ServiceModel], settings_: Settings, database_url: str) -> None:
    with (
        server_in_thread(settings_, database_url) as port,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        machine.stub = jackpot_pb2_grpc.JackpotServiceStub(channel)

        class Audited(machine):  # type: ignore[valid-type, misc]
            def teardown(self) -> None:
                books = asyncio.run(run_audit(settings_, database_url))
                assert books.balanced, books.problems()

        run_state_machine_as_test(Audited, settings=MODEL_SETTINGS)


def test_service_matches_the_model(settings: Settings, database_url: str) -> None:
    run_model(ServiceModel, settings, database_url)


def test_service_matches_the_model_with_mismatched_replays(
    settings: Settings, database_url: str
) -> None:
    run_model(ServiceModelPerContract, settings, database_url)
