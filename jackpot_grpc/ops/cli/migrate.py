"""`jackpot migrate`: bring the database to the latest schema revision (or print the SQL)."""

from __future__ import annotations

import argparse

from jackpot_grpc.config import Settings
from jackpot_grpc.ops.cli.options import Subparsers
from jackpot_grpc.ops.cli.shared import database


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    if args.dry_run:
        from jackpot_grpc.adapters import migrations

        migrations.print_upgrade_sql()
        return 0
    with database(settings, migrate=True):
        print("database is at the latest schema revision")
    return 0


def register(subparsers: Subparsers) -> None:
    migrate = subparsers.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--dry-run", action="store_true", help="print the SQL, change nothing")
    migrate.set_defaults(func=cmd_migrate)
