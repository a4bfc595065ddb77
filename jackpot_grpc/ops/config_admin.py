"""Pool configuration for operators: show (gRPC or database), validate (file or database),
update (the admin UpdateConfig RPC). Every rule is the domain's own (domain.validation).
(Three commands over one pool configuration: their long part is the readable diff and
report each prints, kept together so show, validate and update read the same way.)
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any

from google.type import decimal_pb2
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.contract.groups import group_from_proto, group_to_proto
from jackpot_grpc.domain.errors import FieldViolation, InvalidArgument
from jackpot_grpc.domain.model import (
    GROUP_CHOICES,
    GROUPS,
    ConfigChange,
    Group,
    OverflowPolicy,
    PendingConfig,
    PoolConfig,
)
from jackpot_grpc.domain.validation import (
    MAX_RATE_SUM,
    apply_config_change,
    check_divert_cycle,
    check_rate_sum,
    parse_rate,
    rate_text,
)
from jackpot_grpc.ops.grpc_client import channel
from jackpot_grpc.ops.ops_error import OpsError
from jackpot_grpc.service.jackpot import JackpotService
from jackpot_grpc.service.reports import run_once

POOL_FIELDS = frozenset(
    {
        "group",
        "contribution_rate",
        "seed_amount",
        "max_amount",
        "version",
        "reserve_rate",
        "overflow_policy",
        "overflow_target",
        # What `config show --json` writes: shown, not checked (the service checked it
        # when it was scheduled).
        "pending_config",
    }
)
POLICY_NAMES = tuple(p.value for p in OverflowPolicy)
_POLICY_TO_PROTO: dict[OverflowPolicy, pb.OverflowPolicy.ValueType] = {
    OverflowPolicy.ACCUMULATE: pb.OVERFLOW_POLICY_ACCUMULATE,
    OverflowPolicy.DIVERT: pb.OVERFLOW_POLICY_DIVERT,
}
_POLICY_FROM_PROTO = {v: k for k, v in _POLICY_TO_PROTO.items()}
# The option of `jackpot config update` that sets each UpdateConfigRequest field, so a
# refusal naming the field names the option too.
UPDATE_OPTIONS = {
    "contribution_rate": "--rate",
    "seed_amount": "--seed",
    "max_amount": "--max",
    "clear_max_amount": "--clear-max",
    "expected_version": "--expected-version",
    "actor": "--actor",
    "reason": "--reason",
    "reserve_rate": "--reserve-rate",
    "overflow_policy": "--overflow-policy",
    "overflow_target": "--overflow-target",
}


class ConfigFileError(OpsError):
    pass


def _rate_text(rate: Decimal | None) -> str | None:
    return None if rate is None else rate_text(rate)


def pending_row(pending: PendingConfig | None) -> dict[str, Any] | None:
    """A pending change as JSON: only what it sets, and where it was recorded."""
    if pending is None:
        return None
    row: dict[str, Any] = {
        "contribution_rate": _rate_text(pending.contribution_rate),
        "seed_amount": pending.seed_amount,
        "max_amount": pending.max_amount,
        "clear_max_amount": pending.clear_max_amount or None,
        "reserve_rate": _rate_text(pending.reserve_rate),
        "overflow_policy": pending.overflow_policy.value if pending.overflow_policy else None,
        "overflow_target": pending.overflow_target.value if pending.overflow_target else None,
    }
    return {k: v for k, v in row.items() if v is not None} | {
        "actor": pending.actor,
        "reason": pending.reason,
        "scheduled_at": pending.scheduled_at,
        "schedule_id": pending.schedule_id,
    }


def pending_text(pending: PendingConfig | None) -> str:
    """A pending change in one table cell: `rate=0.007 max=none (#12)`; empty if none."""
    if pending is None:
        return ""
    row = pending_row(pending)
    assert row is not None
    names = {"contribution_rate": "rate", "seed_amount": "seed", "max_amount": "max"}
    parts = [
        f"{names.get(k, k)}={v}"
        for k, v in row.items()
        if k not in ("actor", "reason", "scheduled_at", "schedule_id", "clear_max_amount")
    ]
    if pending.clear_max_amount:
        parts.append("max=none")
    return " ".join(parts) + f" (#{pending.schedule_id})"


def config_row(config: PoolConfig) -> dict[str, Any]:
    return {
        "group": config.group.value,
        # As the API writes a rate (0.0000000000, never 0E-10).
        "contribution_rate": rate_text(config.contribution_rate),
        "seed_amount": config.seed_amount,
        "max_amount": config.max_amount,
        "version": config.version,
        "reserve_rate": rate_text(config.reserve_rate),
        "overflow_policy": config.overflow_policy.value,
        "overflow_target": config.overflow_target.value if config.overflow_target else None,
        "pending_config": pending_row(config.pending),
    }


def policy_from_proto(value: int) -> OverflowPolicy | None:
    """UNSPECIFIED (and an unknown number): None."""
    return _POLICY_FROM_PROTO.get(value)  # type: ignore[call-overload, no-any-return]


def _rate(message: pb.PoolConfig | pb.PendingConfig, name: str) -> Decimal | None:
    return Decimal(getattr(message, name).value) if message.HasField(name) else None  # type: ignore[arg-type]


def _pending_from_proto(message: pb.PendingConfig) -> PendingConfig:
    return PendingConfig(
        contribution_rate=_rate(message, "contribution_rate"),
        seed_amount=message.seed_amount if message.HasField("seed_amount") else None,
        max_amount=message.max_amount if message.HasField("max_amount") else None,
        clear_max_amount=message.clear_max_amount,
        actor=message.actor,
        reason=message.reason,
        client="",
        scheduled_at=message.scheduled_at.ToDatetime(tzinfo=UTC),
        schedule_id=message.schedule_id,
        reserve_rate=_rate(message, "reserve_rate"),
        overflow_policy=policy_from_proto(message.overflow_policy),
        overflow_target=group_from_proto(message.overflow_target),
    )


def from_proto(message: pb.PoolConfig) -> PoolConfig:
    group = group_from_proto(message.group)
    if group is None:
        raise ValueError(f"unknown group {message.group}")
    return PoolConfig(
        group=group,
        contribution_rate=Decimal(message.contribution_rate.value),
        seed_amount=message.seed_amount,
        max_amount=message.max_amount if message.HasField("max_amount") else None,
        version=message.version,
        reserve_rate=Decimal(message.reserve_rate.value or "0"),
        overflow_policy=policy_from_proto(message.overflow_policy) or OverflowPolicy.ACCUMULATE,
        overflow_target=group_from_proto(message.overflow_target),
        pending=_pending_from_proto(message.pending_config)
        if message.HasField("pending_config")
        else None,
    )


async def show_grpc(
    settings: Settings, target: str, rpc_timeout: float = 5.0, token: str | None = None
) -> list[PoolConfig]:
    """GetConfig with `token` (else the channel's JACKPOT_TOKEN, if any)."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with channel(settings, target) as chan:
        stub = jackpot_pb2_grpc.JackpotServiceStub(chan)
        reply = await stub.GetConfig(pb.GetConfigRequest(), timeout=rpc_timeout, metadata=metadata)
    return [from_proto(p) for p in reply.pools]


async def show_db(settings: Settings, url: str) -> list[PoolConfig]:
    return await run_once(settings, url, JackpotService.config)


# --- validation ----------------------------------------------------------------------


def load_file(path: Path) -> Any:
    """JSON (as `jackpot config show --json` writes it) or TOML; rates stay exact decimals."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigFileError(f"{path}: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".toml":
        try:
            return tomllib.loads(raw.decode(), parse_float=Decimal)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigFileError(f"{path}: not valid TOML: {exc}") from None
    try:
        return json.loads(raw, parse_float=Decimal)
    except ValueError as exc:
        raise ConfigFileError(f"{path}: not valid JSON: {exc}") from None


def _pool_entries(document: Any) -> tuple[list[tuple[str, Any]], list[FieldViolation]]:
    """(field prefix, entry) per pool from {"pools": [...]} / {"pools": {...}} / {group: ...}."""
    if not isinstance(document, Mapping):
        return [], [FieldViolation("pools", "the file must hold an object with a 'pools' key")]
    pools = document.get("pools", document)
    if isinstance(pools, list):
        entries: list[tuple[str, Any]] = []
        for index, entry in enumerate(pools):
            name = entry.get("group") if isinstance(entry, Mapping) else None
            entries.append((f"pools.{name}" if isinstance(name, str) else f"pools[{index}]", entry))
        return entries, []
    if isinstance(pools, Mapping):
        entries = []
        for name, entry in pools.items():
            if isinstance(entry, Mapping) and "group" not in entry:
                entry = {**entry, "group": name}
            entries.append((f"pools.{name}", entry))
        return entries, []
    return [], [FieldViolation("pools", "must be a list or a table of pools")]


def _amount(
    entry: Mapping[str, Any], name: str, where: str, *, required: bool
) -> tuple[int | None, list[FieldViolation]]:
    value = entry.get(name)
    if value is None:
        return None, [FieldViolation(f"{where}.{name}", "is required")] if required else []
    if isinstance(value, bool) or not isinstance(value, int):
        return None, [FieldViolation(f"{where}.{name}", "must be an integer (minor units)")]
    return value, []


def validate_document(
    document: Any, max_rate_sum: Decimal = MAX_RATE_SUM
) -> tuple[list[PoolConfig], list[FieldViolation]]:
    """The pools of a config document, and every rule it breaks (the domain's rules, and
    the rates' sum against `max_rate_sum`, JACKPOT_MAX_RATE_SUM)."""
    entries, problems = _pool_entries(document)
    configs: list[PoolConfig] = []
    seen: set[Group] = set()
    for where, entry in entries:
        if not isinstance(entry, Mapping):
            problems.append(FieldViolation(where, "must be an object"))
            continue
        unknown = sorted(set(entry) - POOL_FIELDS)
        problems.extend(FieldViolation(f"{where}.{k}", "is not a pool setting") for k in unknown)
        try:
            group = Group(entry.get("group"))
        except ValueError:
            problems.append(FieldViolation(f"{where}.group", GROUP_CHOICES))
            continue
        if group in seen:
            problems.append(FieldViolation(where, f"{group.value} appears twice"))
            continue
        seen.add(group)
        pool_problems: list[FieldViolation] = []
        rate = _file_rate(entry, "contribution_rate", where, pool_problems, required=True)
        reserve = _file_rate(entry, "reserve_rate", where, pool_problems, required=False)
        policy = _file_policy(entry, where, pool_problems)
        target = _file_target(entry, where, pool_problems)
        seed, seed_problems = _amount(entry, "seed_amount", where, required=True)
        cap, cap_problems = _amount(entry, "max_amount", where, required=False)
        pool_problems += seed_problems + cap_problems
        if seed is None:
            problems.extend(pool_problems)
            continue
        # The domain's rules run even when a rate is bad (with a stand-in rate whose
        # verdict is dropped), so a cap below the seed is reported beside the bad rate.
        # The reserve and overflow go in as UpdateConfig would send them, so the file is
        # held to that RPC's rules (a target alone means DIVERT; ACCUMULATE takes none).
        base = PoolConfig(group, Decimal(0) if rate is None else rate, seed, cap, version=0)
        as_sent = ConfigChange(
            group,
            None,
            None,
            None,
            False,
            None,
            "validate",
            "",
            reserve_rate=reserve,
            overflow_policy=policy,
            overflow_target=target,
        )
        try:
            checked = apply_config_change(base, as_sent)
        except InvalidArgument as exc:
            pool_problems.extend(
                FieldViolation(f"{where}.{v.field}", v.description)
                for v in exc.violations
                if rate is not None or v.field != "contribution_rate"
            )
        if pool_problems:
            problems.extend(pool_problems)
            continue
        version = entry.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            version = 0
        configs.append(dataclasses.replace(checked, version=version))
    # Reported with everything else, not only once the rest is right.
    problems.extend(
        FieldViolation(f"pools.{g.value}", "is missing") for g in GROUPS if g not in seen
    )
    # The service's rules across pools: no cycle of diverts, and display and reserve rates
    # together within the bound.
    targets = {c.group: c.overflow_target for c in configs}
    for c in configs:
        try:
            check_divert_cycle(c.group, targets)
        except InvalidArgument as exc:
            problems.extend(
                FieldViolation(f"pools.{c.group.value}.{v.field}", v.description)
                for v in exc.violations
            )
    try:
        check_rate_sum((c.contribution_rate + c.reserve_rate for c in configs), max_rate_sum)
    except InvalidArgument as exc:
        problems.extend(FieldViolation("pools", v.description) for v in exc.violations)
    return configs, problems


def _file_rate(
    entry: Mapping[str, Any],
    name: str,
    where: str,
    problems: list[FieldViolation],
    *,
    required: bool,
) -> Decimal | None:
    """A rate of a config file, read as the service reads one (parse_rate); None if it is
    absent or bad (the problem added)."""
    raw = entry.get(name)
    if raw is None:
        if required:
            problems.append(FieldViolation(f"{where}.{name}", "is required"))
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        problems.append(FieldViolation(f"{where}.{name}", "must be a decimal number"))
        return None
    try:
        return parse_rate(f"{where}.{name}", str(raw))
    except InvalidArgument as exc:
        problems.extend(exc.violations)
        return None


def _file_policy(
    entry: Mapping[str, Any], where: str, problems: list[FieldViolation]
) -> OverflowPolicy | None:
    raw = entry.get("overflow_policy")
    if raw is None:
        return None
    try:
        return OverflowPolicy(raw)
    except ValueError:
        problems.append(
            FieldViolation(f"{where}.overflow_policy", f"must be one of {', '.join(POLICY_NAMES)}")
        )
        return None


def _file_target(
    entry: Mapping[str, Any], where: str, problems: list[FieldViolation]
) -> Group | None:
    raw = entry.get("overflow_target")
    if raw is None:
        return None
    try:
        return Group(raw)
    except ValueError:
        problems.append(FieldViolation(f"{where}.overflow_target", GROUP_CHOICES))
        return None


def validate_configs(
    configs: list[PoolConfig], max_rate_sum: Decimal = MAX_RATE_SUM
) -> list[FieldViolation]:
    """The rules applied to configs read from the database (or the service)."""
    return validate_document({"pools": [config_row(c) for c in configs]}, max_rate_sum)[1]


# --- update ----------------------------------------------------------------------------


def update_request(
    group: Group,
    *,
    rate: str | None,
    seed: int | None,
    cap: int | None,
    clear_cap: bool,
    expected_version: int | None,
    actor: str,
    reason: str,
    at_next_win: bool = False,
    reserve_rate: str | None = None,
    overflow_policy: OverflowPolicy | None = None,
    overflow_target: Group | None = None,
) -> pb.UpdateConfigRequest:
    request = pb.UpdateConfigRequest(
        group=group_to_proto(group),
        clear_max_amount=clear_cap,
        actor=actor,
        reason=reason,
        apply_at_next_win=at_next_win,
    )
    if rate is not None:
        request.contribution_rate.CopyFrom(decimal_pb2.Decimal(value=rate))
    if reserve_rate is not None:
        request.reserve_rate.CopyFrom(decimal_pb2.Decimal(value=reserve_rate))
    if overflow_policy is not None:
        request.overflow_policy = _POLICY_TO_PROTO[overflow_policy]
    if overflow_target is not None:
        request.overflow_target = group_to_proto(overflow_target)
    if seed is not None:
        request.seed_amount = seed
    if cap is not None:
        request.max_amount = cap
    if expected_version is not None:
        request.expected_version = expected_version
    return request


async def update_grpc(
    settings: Settings,
    target: str,
    token: str | None,
    request: pb.UpdateConfigRequest,
    rpc_timeout: float = 5.0,
) -> tuple[PoolConfig, int]:
    """UpdateConfig with `token` (else the channel's JACKPOT_TOKEN, if any)."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with channel(settings, target) as chan:
        stub = jackpot_pb2_grpc.JackpotServiceStub(chan)
        reply = await stub.UpdateConfig(request, timeout=rpc_timeout, metadata=metadata)
    return from_proto(reply.config), reply.audit_id


def preview_change(current: PoolConfig, request: pb.UpdateConfigRequest) -> PoolConfig:
    """What UpdateConfig would make of `current` (InvalidArgument if it breaks a rule)."""
    change = ConfigChange(
        group=current.group,
        contribution_rate=parse_rate("contribution_rate", request.contribution_rate.value)
        if request.HasField("contribution_rate")
        else None,
        seed_amount=request.seed_amount if request.HasField("seed_amount") else None,
        max_amount=request.max_amount if request.HasField("max_amount") else None,
        clear_max_amount=request.clear_max_amount,
        expected_version=None,
        actor=request.actor,
        reason=request.reason,
        reserve_rate=parse_rate("reserve_rate", request.reserve_rate.value)
        if request.HasField("reserve_rate")
        else None,
        overflow_policy=policy_from_proto(request.overflow_policy),
        overflow_target=group_from_proto(request.overflow_target),
    )
    return apply_config_change(current, change)


# --- pool lifecycle --------------------------------------------------------------------


async def set_suspended_grpc(
    settings: Settings,
    target: str,
    token: str | None,
    group: Group,
    *,
    suspend: bool,
    actor: str,
    reason: str,
    rpc_timeout: float = 5.0,
) -> tuple[pb.Pool, int]:
    """SuspendPool / ResumePool with `token` (else the channel's JACKPOT_TOKEN): the pool
    after, and the lifecycle event's id (0: it was already so, nothing written)."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with channel(settings, target) as chan:
        stub = jackpot_pb2_grpc.JackpotServiceStub(chan)
        if suspend:
            request = pb.SuspendPoolRequest(group=group_to_proto(group), reason=reason, actor=actor)
            reply = await stub.SuspendPool(request, timeout=rpc_timeout, metadata=metadata)
        else:
            resume = pb.ResumePoolRequest(group=group_to_proto(group), reason=reason, actor=actor)
            reply = await stub.ResumePool(resume, timeout=rpc_timeout, metadata=metadata)
    return reply.pool, reply.event_id


def pool_row(pool: pb.Pool) -> dict[str, Any]:
    group = group_from_proto(pool.group)
    return {
        "group": group.value if group else str(pool.group),
        "suspended": pool.suspended,
        "suspended_reason": pool.suspended_reason,
        "current_amount": pool.current_amount,
        "reserve_amount": pool.meters.reserve_amount,
        "overflow_amount": pool.meters.overflow_amount,
        "config_version": pool.config_version,
    }
