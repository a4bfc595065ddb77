"""`jackpot config show | validate | update`: the pools' configuration, read, checked, changed."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.domain.errors import InvalidArgument
from jackpot_grpc.domain.model import GROUP_NAMES, Group, OverflowPolicy, PoolConfig
from jackpot_grpc.ops.cli.options import Subparsers, common
from jackpot_grpc.ops.cli.shared import admin_token, emit, failing_cleanly, grpc_target
from jackpot_grpc.ops.ops_error import OpsError
from jackpot_grpc.ops.output import Section, emit_json, emit_sections

if TYPE_CHECKING:
    from jackpot.v1 import jackpot_pb2 as pb

CONFIG_COLUMNS = (
    "group",
    "contribution_rate",
    "seed_amount",
    "max_amount",
    "version",
    "reserve_rate",
    "overflow_policy",
    "overflow_target",
    "pending",
)


def _table_row(config: PoolConfig) -> dict[str, Any]:
    """A config as a table row: its pending change in one cell (`config_row` is the JSON)."""
    from jackpot_grpc.ops import config_admin

    row = config_admin.config_row(config)
    del row["pending_config"]
    return row | {"pending": config_admin.pending_text(config.pending)}


def _database_configs(settings: Settings) -> list[PoolConfig]:
    from jackpot_grpc.ops import config_admin
    from jackpot_grpc.ops.target import open_database

    with open_database(settings) as db:
        return asyncio.run(config_admin.show_db(settings, db.url))


@failing_cleanly
def cmd_config_show(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops import config_admin

    if args.from_db:
        configs = _database_configs(settings)
        source = "database"
    else:
        source = grpc_target(settings, args)
        configs = asyncio.run(config_admin.show_grpc(settings, source, args.timeout))
    if args.json:  # the shape `config validate FILE` reads back
        emit_json({"source": source, "pools": [config_admin.config_row(c) for c in configs]})
    else:
        rows = [_table_row(c) for c in configs]
        emit_sections([Section(f"Pool configuration ({source})", CONFIG_COLUMNS, rows)])
    return 0


@failing_cleanly
def cmd_config_validate(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops import config_admin

    if args.file:
        source = args.file
        document = config_admin.load_file(Path(args.file))
        configs, problems = config_admin.validate_document(document, settings.service.max_rate_sum)
    else:
        configs = _database_configs(settings)
        source = "database"
        problems = config_admin.validate_configs(configs, settings.service.max_rate_sum)
    ok = not problems
    violations = [{"field": p.field, "problem": p.description} for p in problems]
    rows = [_table_row(c) for c in configs]
    emit(
        args,
        {
            "ok": ok,
            "source": source,
            "violations": violations,
            "pools": [config_admin.config_row(c) for c in configs],
        },
        [
            Section(f"Pool configuration ({source})", CONFIG_COLUMNS, rows, note="no valid pool"),
            Section("Violations", ("field", "problem"), violations, note="none"),
        ],
        "configuration is valid"
        if ok
        else "INVALID: " + "; ".join(f"{v['field']}: {v['problem']}" for v in violations),
    )
    return 0 if ok else 1


def _update_request(args: argparse.Namespace) -> pb.UpdateConfigRequest:
    from jackpot_grpc.ops import config_admin

    return config_admin.update_request(
        Group(args.group),
        rate=args.rate,
        seed=args.seed,
        cap=args.max,
        clear_cap=args.clear_max,
        expected_version=args.expected_version,
        actor=args.actor or getpass.getuser(),
        reason=args.reason,
        at_next_win=args.at_next_win,
        reserve_rate=args.reserve_rate,
        overflow_policy=OverflowPolicy(args.overflow_policy) if args.overflow_policy else None,
        overflow_target=Group(args.overflow_target) if args.overflow_target else None,
    )


def _dry_run(
    settings: Settings, args: argparse.Namespace, target: str, request: pb.UpdateConfigRequest
) -> int:
    """Check the change against the service's current configuration; send nothing."""
    from jackpot_grpc.ops import config_admin

    # Read as the update would send: a host with only JACKPOT_ADMIN_TOKEN can dry-run too.
    token = admin_token(settings)
    configs = asyncio.run(config_admin.show_grpc(settings, target, args.timeout, token))
    before = {c.group.value: c for c in configs}[args.group]
    try:
        after = config_admin.preview_change(before, request)
    except InvalidArgument as exc:
        violations = [
            {
                "field": v.field,
                "option": config_admin.UPDATE_OPTIONS.get(v.field, ""),
                "problem": v.description,
            }
            for v in exc.violations
        ]
        emit(
            args,
            {"ok": False, "dry_run": True, "violations": violations},
            [Section("Violations", ("field", "option", "problem"), violations)],
            "INVALID CHANGE",
        )
        return 1
    rows = [{"": "before", **_table_row(before)}, {"": "after", **_table_row(after)}]
    emit(
        args,
        {
            "ok": True,
            "dry_run": True,
            "before": config_admin.config_row(before),
            "after": config_admin.config_row(after),
        },
        [Section("Dry run (nothing sent)", ("", *CONFIG_COLUMNS), rows)],
        "change is valid; run again without --dry-run to apply",
    )
    return 0


def _apply(
    settings: Settings, args: argparse.Namespace, target: str, request: pb.UpdateConfigRequest
) -> int:
    from jackpot_grpc.ops import config_admin

    token = admin_token(settings)
    try:
        config, audit_id = asyncio.run(
            config_admin.update_grpc(settings, target, token, request, args.timeout)
        )
    except grpc.aio.AioRpcError as exc:  # a refused field: name the option that set it
        from jackpot_grpc.ops.grpc_client import describe_error

        described = describe_error(exc, config_admin.UPDATE_OPTIONS)
        raise OpsError(f"service call failed: {described}") from None
    row = config_admin.config_row(config)
    table = [_table_row(config)]
    if args.at_next_win:
        emit(
            args,
            {"ok": True, "scheduled": True, "schedule_id": audit_id, "config": row},
            [Section(f"In force until the next win ({target})", CONFIG_COLUMNS, table)],
            f"{args.group}: change scheduled for the pool's next win (#{audit_id})",
        )
        return 0
    emit(
        args,
        {"ok": True, "audit_id": audit_id, "config": row},
        [Section(f"Updated ({target})", CONFIG_COLUMNS, table)],
        f"{args.group} updated to version {config.version} (audit #{audit_id})",
    )
    return 0


@failing_cleanly
def cmd_config_update(settings: Settings, args: argparse.Namespace) -> int:
    changes = (args.rate, args.seed, args.max, args.reserve_rate, args.overflow_policy)
    if all(c is None for c in changes) and not (args.clear_max or args.overflow_target):
        print(
            "error: nothing to change: give --rate, --seed, --max, --clear-max, --reserve-rate,"
            " --overflow-policy or --overflow-target",
            file=sys.stderr,
        )
        return 2
    target = grpc_target(settings, args)
    request = _update_request(args)
    if args.dry_run:
        return _dry_run(settings, args, target, request)
    return _apply(settings, args, target, request)


def register(subparsers: Subparsers) -> None:
    config = subparsers.add_parser("config", help="show, validate or update pool configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="GetConfig (or read the database)")
    common(show, grpc_target=True)
    show.add_argument("--from-db", action="store_true", help="read the database, not the service")
    show.set_defaults(func=cmd_config_show)
    validate = config_sub.add_parser("validate", help="check a JSON/TOML file or the database")
    common(validate)
    validate.add_argument("file", nargs="?", help="config file (default: the database's config)")
    validate.set_defaults(func=cmd_config_validate)
    update = config_sub.add_parser(
        "update", help="UpdateConfig (admin; JACKPOT_TOKEN or JACKPOT_ADMIN_TOKEN)"
    )
    common(update, grpc_target=True)
    update.add_argument("--group", required=True, choices=GROUP_NAMES)
    update.add_argument("--rate", help="contribution rate, an exact decimal (0.006)")
    update.add_argument("--seed", type=int, help="seed amount (minor units)")
    update.add_argument("--max", type=int, help="cap (minor units)")
    update.add_argument("--clear-max", action="store_true", help="remove the cap")
    update.add_argument(
        "--reserve-rate",
        help="the share of each wager kept to fund the next reset, an exact decimal (0.001)",
    )
    update.add_argument(
        "--overflow-policy",
        choices=[p.value for p in OverflowPolicy],
        help="past the cap: accumulate on the pool's overflow meter, or divert to a pool",
    )
    update.add_argument(
        "--overflow-target",
        choices=GROUP_NAMES,
        metavar="GROUP",
        help="the pool overflow is diverted to (alone, it means --overflow-policy divert)",
    )
    update.add_argument("--expected-version", type=int, help="apply only at this pool version")
    update.add_argument("--actor", help="who makes the change (default: the login name)")
    update.add_argument("--reason", default="", help="why (kept in the audit)")
    update.add_argument("--dry-run", action="store_true", help="validate against GetConfig only")
    update.add_argument(
        "--at-next-win",
        action="store_true",
        help="record it as pending: applied in the transaction of the pool's next win",
    )
    update.set_defaults(func=cmd_config_update)
