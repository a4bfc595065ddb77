"""`jackpot audit`: reconcile every pool, and the contribution totals, against the ledger."""

from __future__ import annotations

import argparse
import asyncio
import json

from jackpot_grpc.config import Settings
from jackpot_grpc.domain.model import LedgerAudit
from jackpot_grpc.ops.cli.options import Subparsers
from jackpot_grpc.ops.output import render_table
from jackpot_grpc.ops.target import open_database

COLUMNS = ("group", "current_amount", "seed_funding", "contributions", "wins")


def print_books(books: LedgerAudit) -> None:
    rows = [
        {
            **{c: getattr(a, c) for c in COLUMNS[1:]},
            "group": a.group.value,
            "discrepancy": a.discrepancy,
            "status": "ok" if a.balanced else "MISMATCH",
        }
        for a in books.pools
    ]
    print(render_table((*COLUMNS, "discrepancy", "status"), rows))
    print(
        f"contribution totals: {books.recorded_contribution_count} contributions,"
        f" {books.recorded_total_wagered} wagered"
    )
    for problem in books.problems():
        print(f"MISMATCH: {problem}")
    note = books.rows.legacy_note()
    if note:
        print(f"note: {note}")
    print("books balance" if books.balanced else "BOOKS DO NOT BALANCE")


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.service.reports import audit_report, run_audit

    with open_database(settings) as db:
        books = asyncio.run(run_audit(settings, db.url))
    if args.json:
        print(json.dumps(audit_report(books), indent=2))
    else:
        print_books(books)
    return 0 if books.balanced else 1


def register(subparsers: Subparsers) -> None:
    audit = subparsers.add_parser("audit", help="reconcile every pool against its ledger")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(func=cmd_audit)
