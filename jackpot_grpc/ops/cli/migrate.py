"""`jackpot migrate`: bring the database to the latest schema revision, saying what was
applied; `--dry-run` asks the database where it stands and prints only the pending SQL."""

from __future__ import annotations

import argparse
import sys

from jackpot_grpc.config import Settings
from jackpot_grpc.ops.cli.options import Subparsers, common
from jackpot_grpc.ops.cli.shared import emit, failing_cleanly
from jackpot_grpc.ops.output import Section, progress
from jackpot_grpc.ops.target import open_database

REVISION_COLUMNS = ("revision", "description")


@failing_cleanly
def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.adapters import migrations

    with open_database(settings) as db:
        # Connects first: an unreachable database fails here, before anything is printed.
        current = migrations.current_revision(db.url, connect_timeout=round(args.timeout))
        todo = migrations.pending(current)
        rows = [vars(r) for r in todo]
        if args.dry_run:
            script = migrations.upgrade_sql(current) if todo else ""
            if args.json:
                emit(args, {"ok": True, "current": current, "pending": rows, "sql": script}, [])
            elif todo:
                progress(f"migrate: at {current or 'an empty schema'}; {len(todo)} pending")
                sys.stdout.write(script)
            else:
                print(f"no pending migrations (at {current})")
            return 0
        for revision in todo:
            progress(f"migrate: applying {revision.revision} {revision.description}")
            migrations.upgrade(db.url, revision.revision)
        after = migrations.current_revision(db.url)
    emit(
        args,
        {"ok": True, "before": current, "current": after, "applied": rows},
        [Section("Applied", REVISION_COLUMNS, rows, note="nothing to apply")],
        f"database is at the latest schema revision ({after})",
    )
    return 0


def register(subparsers: Subparsers) -> None:
    migrate = subparsers.add_parser("migrate", help="apply database migrations")
    common(migrate)
    migrate.add_argument(
        "--dry-run", action="store_true", help="print the pending revisions' SQL, change nothing"
    )
    migrate.set_defaults(func=cmd_migrate)
