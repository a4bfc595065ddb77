"""`jackpot backup create | verify | restore | prune`: backups made, checked, restored, aged out."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jackpot_grpc.config import Settings
from jackpot_grpc.domain.model import GROUP_NAMES, LedgerAudit
from jackpot_grpc.ops.cli.options import Subparsers, common, positive_int, positive_seconds
from jackpot_grpc.ops.cli.shared import emit, failing_cleanly
from jackpot_grpc.ops.output import Section, key_values, progress

if TYPE_CHECKING:
    from jackpot_grpc.ops.backup import RestoreResult, Verification

DEFAULT_KEEP = 3  # jackpot_grpc.ops.backup.DEFAULT_KEEP (not imported: pg tooling is lazy)
BACKUP_DIR_HELP = "backup root (default: JACKPOT_BACKUP_DIR, else ./backups)"


def _bin_dirs(args: argparse.Namespace, embedded: Path | None) -> list[Path]:
    dirs = [Path(args.pg_bin_dir)] if args.pg_bin_dir else []
    return dirs + ([embedded] if embedded else [])


def _backup_root(settings: Settings, args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir else settings.database.backup_dir


def _verification_rows(v: Verification) -> list[dict[str, Any]]:
    header: dict[str, str] = {
        k: v.header[k]
        for k in (
            "Dumped from database version",
            "Dumped by pg_dump version",
            "Archive created at",
            "dbname",
        )
        if k in v.header
    }
    return key_values(
        {
            "file": v.file,
            "ok": v.ok,
            "toc_entries": v.entries,
            "tables": len(v.tables),
            "table_data": ", ".join(v.table_data),
            "schema_revision": v.revision,
            "read_whole": v.read_whole,
            "sha256_manifest": v.checksum,
            **header,
            "error": v.error or None,
        }
    )


@failing_cleanly
def cmd_backup_create(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops.backup import create_backup
    from jackpot_grpc.ops.target import open_database

    with open_database(settings) as db:
        result = create_backup(
            db.url,
            _backup_root(settings, args),
            _bin_dirs(args, db.bin_dir),
            with_sql=args.with_sql,
            verbose=args.verbose,
        )
    summary = {
        "file": result.file,
        "size_bytes": result.size_bytes,
        "seconds": result.seconds,
        "database": result.database,
        "server_version": result.server_version,
        "pg_dump": result.pg_dump,
        "schema_revision": result.revision,
        "verified": result.verification.ok,
        "manifest": result.manifest,
        "extra_files": ", ".join(str(p) for p in result.extra_files) or None,
    }
    emit(
        args,
        {"ok": True, **vars(result)},
        [Section("Backup", ("item", "value"), key_values(summary))],
        f"backup verified: {result.file}",
    )
    return 0


@failing_cleanly
def cmd_backup_verify(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops.backup import newest_tool, verify_backup

    tool = newest_tool("pg_restore", _bin_dirs(args, None))
    result = verify_backup(Path(args.file), tool)
    emit(
        args,
        {"ok": result.ok, **vars(result)},
        [Section("Backup verification", ("item", "value"), _verification_rows(result))],
        "backup verification successful"
        if result.ok
        else f"BACKUP VERIFICATION FAILED: {result.error}",
    )
    return 0 if result.ok else 1


def _restore_and_audit(
    settings: Settings, args: argparse.Namespace
) -> tuple[RestoreResult, LedgerAudit, str]:
    """Restore into the new database, then audit the books restored there; the new
    database's connection string comes last, without its password."""
    from jackpot_grpc.ops.backup import BackupError, describe, discard_database, restore_backup
    from jackpot_grpc.ops.target import open_database, split_password, with_dbname
    from jackpot_grpc.service.reports import run_audit

    with open_database(settings) as db:
        result = restore_backup(
            db.url,
            Path(args.file),
            args.database,
            _bin_dirs(args, db.bin_dir),
            verbose=args.verbose,
        )
        progress(f"restore: auditing the books of {args.database}")
        try:
            books = asyncio.run(run_audit(settings, with_dbname(db.url, args.database)))
        except BaseException as exc:  # books that cannot be audited are no recovery
            raise BackupError(
                f"the books of {args.database} cannot be audited: {describe(exc)};"
                f" {discard_database(db.url, args.database)}"
            ) from exc
        restored_url, _ = split_password(with_dbname(db.url, args.database))
    return result, books, restored_url


def _restore_sections(
    result: RestoreResult, database_url: str, audit_rows: list[dict[str, Any]]
) -> list[Section]:
    return [
        Section(
            "Restore",
            ("item", "value"),
            key_values(
                {
                    "file": result.file,
                    "database": result.database,
                    "database_url": database_url,
                    "pg_restore": result.pg_restore,
                    "seconds": result.seconds,
                    "schema_revision": result.revision,
                }
            ),
        ),
        Section(
            "Pools restored",
            ("group", "rows", "current_amount", "total_contributions", "total_wins", "version"),
            result.counts["pools"],
        ),
        Section("Rows per table", ("item", "value"), key_values(result.counts["tables"])),
        Section("Audit", ("group", "current_amount", "expected_amount", "balanced"), audit_rows),
    ]


@failing_cleanly
def cmd_backup_restore(settings: Settings, args: argparse.Namespace) -> int:
    result, books, database_url = _restore_and_audit(settings, args)
    balanced = books.balanced
    groups = [p["group"] for p in result.counts["pools"]]
    ok = balanced and sorted(groups) == sorted(GROUP_NAMES)
    audit_rows = [
        {
            "group": a.group.value,
            "current_amount": a.current_amount,
            "expected_amount": a.expected_amount,
            "balanced": a.balanced,
        }
        for a in books.pools
    ]
    emit(
        args,
        {
            "ok": ok,
            **vars(result),
            "database_url": database_url,
            "audit": audit_rows,
            "balanced": balanced,
        },
        _restore_sections(result, database_url, audit_rows),
        f"restored into {result.database}; books balance"
        if ok
        else f"RESTORED INTO {result.database} BUT CHECKS FAILED"
        f" (groups {groups}, balanced {balanced})",
    )
    return 0 if ok else 1


@failing_cleanly
def cmd_backup_prune(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ops.backup import prune_backups

    root = _backup_root(settings, args)
    pruned, kept = prune_backups(root, args.older_than_days, keep=args.keep, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    emit(
        args,
        {"ok": True, "dir": root, "dry_run": args.dry_run, "files": pruned, "kept": kept},
        [
            Section(
                f"Backups older than {args.older_than_days:g} days in {root}",
                ("file", "size_bytes", "modified", "deleted"),
                pruned,
                note="none",
            ),
            Section("Kept (newest verified)", ("file",), [{"file": k} for k in kept]),
        ],
        f"{verb} {len(pruned)} file(s); kept the newest {len(kept)} verified backup(s)",
    )
    return 0


def _pg_bin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pg-bin-dir", help="directory of pg_dump/pg_restore to try first")
    parser.add_argument("--verbose", action="store_true", help="show the client tool's output")


def register(subparsers: Subparsers) -> None:
    backup = subparsers.add_parser("backup", help="create, verify, restore and prune backups")
    backup_sub = backup.add_subparsers(dest="backup_command", required=True)
    create = backup_sub.add_parser("create", help="pg_dump --format=custom, then verify it")
    common(create)
    _pg_bin(create)
    create.add_argument("--dir", help=BACKUP_DIR_HELP)
    create.add_argument(
        "--with-sql", action="store_true", help="also schema-only and data-only SQL"
    )
    create.set_defaults(func=cmd_backup_create)
    verify = backup_sub.add_parser(
        "verify", help="read a backup whole, check its manifest and its revision's tables"
    )
    common(verify)
    _pg_bin(verify)
    verify.add_argument("file")
    verify.set_defaults(func=cmd_backup_verify)
    restore = backup_sub.add_parser("restore", help="restore into a NEW database and check it")
    common(restore)
    _pg_bin(restore)
    restore.add_argument("file")
    restore.add_argument("--database", required=True, help="name of the database to create")
    restore.set_defaults(func=cmd_backup_restore)
    prune = backup_sub.add_parser(
        "prune", help="delete backups older than N days, keeping the newest verified ones"
    )
    common(prune)
    prune.add_argument("--dir", help=BACKUP_DIR_HELP)
    prune.add_argument("--older-than-days", type=positive_seconds, default=30.0)
    prune.add_argument(
        "--keep",
        type=positive_int,
        default=DEFAULT_KEEP,
        help=f"newest verified backups never deleted, whatever their age ({DEFAULT_KEEP})",
    )
    prune.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    prune.set_defaults(func=cmd_backup_prune)
