"""`jackpot audit`: reconcile every pool, and the contribution totals, against the ledger."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jackpot_grpc.config import Settings
from jackpot_grpc.domain.model import LedgerAudit
from jackpot_grpc.ledger.verify import CheckpointAudit, Finding
from jackpot_grpc.ops.cli.options import Subparsers
from jackpot_grpc.ops.cli.shared import failing_cleanly
from jackpot_grpc.ops.ops_error import OpsError
from jackpot_grpc.ops.output import render_table
from jackpot_grpc.ops.target import open_database

if TYPE_CHECKING:
    from jackpot_grpc.service.ledger_books import AuditState

COLUMNS = ("group", "current_amount", "seed_funding", "contributions", "wins")
METER_COLUMNS = ("reserve", "overflow", "identity")
# Each pool's meters tie together (docs/ARCHITECTURE.md, "The meters and their identity").
IDENTITY = (
    "display + reserve + overflow + paid + diverted out"
    " = contributed + diverted in + seed from the operator"
)


def print_books(books: LedgerAudit) -> None:
    rows = [
        {
            **{c: getattr(a, c) for c in COLUMNS[1:]},
            "group": a.group.value,
            "discrepancy": a.discrepancy,
            "reserve": a.reserve_amount,
            "overflow": a.overflow_amount,
            "identity": "holds" if a.identity_gap == 0 else f"off by {a.identity_gap}",
            "status": "ok" if a.balanced else "MISMATCH",
        }
        for a in books.pools
    ]
    print(
        render_table((*COLUMNS, "reserve", "overflow", "identity", "discrepancy", "status"), rows)
    )
    print(f"identity: {IDENTITY}")
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


def checkpoint_report(result: CheckpointAudit) -> dict[str, Any]:
    first = result.first_bad()
    return {
        "ok": result.ok,
        "checkpoints": result.checkpoints,
        "leaves": result.leaves,
        "rebuilt_from": result.started_at,
        "pending": result.pending,
        "latest_checkpoint_size": result.latest_size,
        "first_bad": None if first is None else finding_report(first),
        "findings": [finding_report(f) for f in result.findings],
    }


def finding_report(finding: Finding) -> dict[str, Any]:
    return {
        "table": finding.table,
        "id": finding.row_id,
        "leaf_index": finding.leaf_index,
        "problem": finding.problem,
    }


def print_checkpoints(result: CheckpointAudit) -> None:
    print(
        f"checkpoints: {result.checkpoints} verified signatures read, {result.leaves} leaves"
        f" rebuilt, {result.pending} rows not yet leaves"
    )
    for finding in result.findings:
        print(f"TAMPERED: {finding}")
    print("the rows match the checkpoints" if result.ok else "ROWS DO NOT MATCH THE CHECKPOINTS")


def _read_state(args: argparse.Namespace) -> AuditState | None:
    from jackpot_grpc.service.ledger_books import AuditState

    state_file = Path(args.state) if args.state else None
    if state_file is None or not state_file.exists() or args.full:
        return None
    try:
        return AuditState.from_json(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        raise OpsError(f"--state {state_file}: {exc}") from exc


def _checkpoint_audit(
    url: str, args: argparse.Namespace, state: AuditState | None
) -> tuple[CheckpointAudit, AuditState | None]:
    from jackpot_grpc.ledger.note import NoteError
    from jackpot_grpc.service.ledger_books import audit_against_checkpoints

    if not args.public_key:
        raise OpsError("--checkpoints needs --public-key (the verifier key file)")
    try:
        log_text = Path(args.checkpoints).read_text(encoding="utf-8")
        key_text = Path(args.public_key).read_text(encoding="utf-8")
        return audit_against_checkpoints(url, log_text, key_text, state)
    except (OSError, NoteError, ValueError, KeyError) as exc:
        raise OpsError(str(exc)) from exc


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    """The books; with --checkpoints the rows against the signed checkpoints too. With
    --state both are incremental: from the checkpoint the file records as proved, and
    from where the books were last found clean (both re-proved in full with --full)."""
    from jackpot_grpc.service.reports import audit_report, run_audit_from

    state = _read_state(args) if args.checkpoints else None
    with open_database(settings) as db:
        books, base = asyncio.run(
            run_audit_from(settings, db.url, state.books if state is not None else None)
        )
        proofs, after = _checkpoint_audit(db.url, args, state) if args.checkpoints else (None, None)
    ok = books.balanced and (proofs is None or proofs.ok)
    if args.state and after is not None:
        # The books' base only when this audit found them clean (else the next is full).
        Path(args.state).write_text(
            dataclasses.replace(after, books=base if ok else None).to_json() + "\n",
            encoding="utf-8",
        )
    if args.json:
        report = audit_report(books)
        if proofs is not None:
            report["checkpoints"] = checkpoint_report(proofs)
            report["ok"] = ok
        print(json.dumps(report, indent=2))
    else:
        print_books(books)
        if proofs is not None:
            print_checkpoints(proofs)
    return 0 if ok else 1


def register(subparsers: Subparsers) -> None:
    audit = subparsers.add_parser("audit", help="reconcile every pool against its ledger")
    audit.add_argument("--json", action="store_true")
    audit.add_argument(
        "--checkpoints",
        metavar="FILE",
        help="the checkpoint log: rebuild the tree from the rows and check it against each",
    )
    audit.add_argument(
        "--public-key", metavar="FILE", help="the verifier key of the checkpoints (KEY.pub)"
    )
    audit.add_argument(
        "--state",
        metavar="FILE",
        help="incremental: start from the checkpoint this file records as proved (when a"
        " signed checkpoint in the log vouches for it), and record the newest one proved",
    )
    audit.add_argument(
        "--full", action="store_true", help="rebuild the whole tree even with --state"
    )
    audit.set_defaults(func=failing_cleanly(cmd_audit))
