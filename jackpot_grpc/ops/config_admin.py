"""Pool configuration for operators: show (gRPC or database), validate (file or database),
update (the admin UpdateConfig RPC). Every rule is the domain's own (domain.validation).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from google.type import decimal_pb2
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.contract.groups import group_from_proto, group_to_proto
from jackpot_grpc.domain.errors import FieldViolation, InvalidArgument
from jackpot_grpc.domain.model import GROUP_CHOICES, GROUPS, ConfigChange, Group, PoolConfig
from jackpot_grpc.domain.validation import (
    MAX_RATE_SUM,
    apply_config_change,
    check_rate_sum,
    parse_rate,
)
from jackpot_grpc.ops.errors import OpsError
from jackpot_grpc.ops.grpc_client import channel
from jackpot_grpc.service.jackpot import JackpotService
from jackpot_grpc.service.reports import run_once

POOL_FIELDS = frozenset({"group", "contribution_rate", "seed_amount", "max_amount", "version"})


class ConfigFileError(OpsError):
    pass


def config_row(config: PoolConfig) -> dict[str, Any]:
    return {
        "group": config.group.value,
        "contribution_rate": config.contribution_rate,
        "seed_amount": config.seed_amount,
        "max_amount": config.max_amount,
        "version": config.version,
    }


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
        rate: Decimal | None = None
        raw_rate = entry.get("contribution_rate")
        if raw_rate is None:
            pool_problems.append(FieldViolation(f"{where}.contribution_rate", "is required"))
        elif isinstance(raw_rate, bool) or not isinstance(raw_rate, str | int | Decimal):
            pool_problems.append(
                FieldViolation(f"{where}.contribution_rate", "must be a decimal number")
            )
        else:
            try:
                rate = parse_rate(f"{where}.contribution_rate", str(raw_rate))
            except InvalidArgument as exc:
                pool_problems.extend(exc.violations)
        seed, seed_problems = _amount(entry, "seed_amount", where, required=True)
        cap, cap_problems = _amount(entry, "max_amount", where, required=False)
        pool_problems += seed_problems + cap_problems
        if seed is None:
            problems.extend(pool_problems)
            continue
        # The domain's rules run even when the rate is bad (with a stand-in rate whose
        # verdict is dropped), so a cap below the seed is reported beside the bad rate.
        base = PoolConfig(group, Decimal(0) if rate is None else rate, seed, cap, version=0)
        keep = ConfigChange(group, None, None, None, False, None, "validate", "")
        try:
            checked = apply_config_change(base, keep)
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
    try:
        check_rate_sum((c.contribution_rate for c in configs), max_rate_sum)
    except InvalidArgument as exc:
        problems.extend(FieldViolation("pools", v.description) for v in exc.violations)
    return configs, problems


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
    )
    return apply_config_change(current, change)
