"""`jackpot migrate`: bring the database to the latest schema revision (or, with `--to`, to
a given one, down as well as up), saying what was applied; `--dry-run` asks the database
where it stands and prints only the SQL that would run."""

from __future__ import annotations

import argparse
import sys

from jackpot_grpc.config import Settings
from jackpot_grpc.ops.cli.options import Subparsers, common
from jackpot_grpc.ops.cli.shared import emit, failing_cleanly
from jackpot_grpc.ops.ops_error import OpsError
from jackpot_grpc.ops.output import Section, progress
from jackpot_grpc.ops.target import open_database

REVISION_COLUMNS = ("revision", "description")


@failing_cleanly
def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.adapters import migrations

    with open_database(settings) as db:
        # Connects first: an unreachable database fails here, before anything is printed.
        current = migrations.current_revision(db.url, connect_timeout=round(args.timeout))
        try:
            way = migrations.plan(current, args.to)
        except ValueError as exc:
            raise OpsError(f"--to {args.to}: {exc}") from None
        rows = [vars(r) for r in way.revisions]
        down = way.direction == "down"
        if args.dry_run:
            script = ""
            if down and current is not None:
                script = migrations.downgrade_sql(current, way.target)
            elif way.revisions:
                script = migrations.upgrade_sql(current, way.target or "head")
            data = {"ok": True, "current": current, "direction": way.direction}
            if args.json:
                emit(args, {**data, "pending": rows, "sql": script}, [])
            elif way.revisions:
                verb = "to undo (downgrade)" if down else "pending"
                progress(f"migrate: at {current or 'an empty schema'}; {len(rows)} {verb}")
                sys.stdout.write(script)
            else:
                print(f"no pending migrations (at {current})")
            return 0
        for revision in way.revisions:
            if down:
                # Undoes the revision: what it added (columns, tables, their rows) is dropped.
                progress(f"migrate: DOWNGRADE undoing {revision.revision} {revision.description}")
                migrations.downgrade(db.url, migrations.below(revision.revision) or "base")
            else:
                progress(f"migrate: applying {revision.revision} {revision.description}")
                migrations.upgrade(db.url, revision.revision)
        after = migrations.current_revision(db.url)
    title = "Undone (downgraded)" if down else "Applied"
    verdict = (
        f"database is at the latest schema revision ({after})"
        if after == migrations.head_revision()
        else f"database is at schema revision {after or 'base'}"
        f" (head is {migrations.head_revision()})"
    )
    emit(
        args,
        {
            "ok": True,
            "before": current,
            "current": after,
            "direction": way.direction,
            "applied": rows,
        },
        [Section(title, REVISION_COLUMNS, rows, note="nothing to apply")],
        verdict,
    )
    return 0


def register(subparsers: Subparsers) -> None:
    migrate = subparsers.add_parser("migrate", help="apply (or, with --to, undo) migrations")
    common(migrate)
    migrate.add_argument(
        "--dry-run", action="store_true", help="print the SQL that would run, change nothing"
    )
    migrate.add_argument(
        "--to",
        default="head",
        metavar="REVISION",
        help="the revision to move to (default head); below the current one, each newer"
        " revision's downgrade runs, newest first (what it added is dropped); base: all",
    )
    migrate.set_defaults(func=cmd_migrate)
