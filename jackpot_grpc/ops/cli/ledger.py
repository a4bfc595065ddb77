"""`jackpot ledger …`: the tamper-evident ledger's keys and checkpoints (docs/LEDGER.md)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from jackpot_grpc.adapters.database import ops_conninfo
from jackpot_grpc.config import Settings
from jackpot_grpc.ops.cli.options import Subparsers
from jackpot_grpc.ops.cli.shared import failing_cleanly
from jackpot_grpc.ops.ops_error import OpsError
from jackpot_grpc.ops.target import open_database

DEFAULT_KEY_NAME = "jackpot-ledger"


def write_private(path: Path, text: str) -> None:
    """Created 0600 from the start: the key is never readable by others, not even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")


def cmd_keygen(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ledger.note import NoteError, Signer

    out = Path(args.out)
    public = Path(f"{out}.pub")
    for path in (out, public):
        if path.exists():
            raise OpsError(f"{path} exists: a ledger key is never overwritten")
    try:
        signer = Signer.generate(args.name)
    except NoteError as exc:
        raise OpsError(str(exc)) from exc
    write_private(out, signer.text())
    public.write_text(signer.verifier.text() + "\n")
    if args.json:
        print(json.dumps({"key": str(out), "verifier_key": signer.verifier.text()}))
    else:
        print(f"private key: {out} (0600)\nverifier key: {public}\n{signer.verifier.text()}")
    return 0


def _key_and_log(settings: Settings) -> tuple[Path, Path]:
    if settings.ledger.key_file is None or settings.ledger.checkpoint_log is None:
        raise OpsError("set JACKPOT_LEDGER_KEY_FILE and JACKPOT_CHECKPOINT_LOG")
    return settings.ledger.key_file, settings.ledger.checkpoint_log


def cmd_checkpoint(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.service.ledger_books import LedgerBooksError, read_signer, sign_checkpoint

    key, log = _key_and_log(settings)
    try:
        signer = read_signer(key)
        with open_database(settings) as db:
            signed = sign_checkpoint(ops_conninfo(db.url), signer, log)
    except LedgerBooksError as exc:
        raise OpsError(str(exc)) from exc
    assert signed is not None  # waited for the lock, and signs even when nothing is new
    if args.json:
        print(
            json.dumps(
                {
                    "ok": True,
                    "tree_size": signed.checkpoint.size,
                    "new_leaves": signed.new_leaves,
                    "checkpoint": signed.note,
                    "log": str(log),
                }
            )
        )
    else:
        print(signed.note, end="")
        print(f"\nappended to {log} ({signed.new_leaves} new leaves)")
    return 0


def _verifier_text(settings: Settings, args: argparse.Namespace) -> str | None:
    """--public-key, else the verifier of JACKPOT_LEDGER_KEY_FILE, else None."""
    from jackpot_grpc.service.ledger_books import read_signer

    if args.public_key:
        return Path(args.public_key).read_text(encoding="utf-8").strip()
    if settings.ledger.key_file is not None:
        return read_signer(settings.ledger.key_file).verifier.text()
    return None


def _log_path(settings: Settings, args: argparse.Namespace) -> Path:
    path = Path(args.checkpoints) if args.checkpoints else settings.ledger.checkpoint_log
    if path is None:
        raise OpsError("give --checkpoints FILE or set JACKPOT_CHECKPOINT_LOG")
    return path


def cmd_prove(settings: Settings, args: argparse.Namespace) -> int:
    from jackpot_grpc.ledger.checkpoint import CheckpointError, split_log
    from jackpot_grpc.ledger.note import NoteError, Verifier
    from jackpot_grpc.service.ledger_books import LedgerBooksError, prove

    try:
        key = _verifier_text(settings, args)
        if key is None:
            raise OpsError("give --public-key FILE or set JACKPOT_LEDGER_KEY_FILE")
        notes = list(split_log(_log_path(settings, args).read_text(encoding="utf-8")))
        with open_database(settings) as db:
            proof = prove(ops_conninfo(db.url), args.index, notes, Verifier.from_text(key))
    except (LedgerBooksError, CheckpointError, NoteError) as exc:
        raise OpsError(str(exc)) from exc
    print(json.dumps(proof.as_json(), indent=2))
    return 0


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    """DIR/leaves.jsonl, DIR/checkpoints.log and DIR/verifier.key (when known)."""
    from jackpot_grpc.service.ledger_books import LedgerBooksError, export_leaves

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        key = _verifier_text(settings, args)
        log = _log_path(settings, args)
        with open_database(settings) as db:
            leaves = export_leaves(ops_conninfo(db.url))
    except LedgerBooksError as exc:
        raise OpsError(str(exc)) from exc
    with (out / "leaves.jsonl").open("w", encoding="utf-8") as lines:
        for leaf in leaves:
            lines.write(json.dumps(leaf.as_json()) + "\n")
    (out / "checkpoints.log").write_text(
        log.read_text(encoding="utf-8") if log.exists() else "", encoding="utf-8"
    )
    if key is not None:
        (out / "verifier.key").write_text(key + "\n", encoding="utf-8")
    summary = {"ok": True, "leaves": len(leaves), "out": str(out)}
    print(json.dumps(summary) if args.json else f"{len(leaves)} leaves exported to {out}")
    return 0


def register(subparsers: Subparsers) -> None:
    ledger = subparsers.add_parser("ledger", help="the tamper-evident ledger: keys, checkpoints")
    commands = ledger.add_subparsers(dest="ledger_command", required=True)
    keygen = commands.add_parser("keygen", help="write a checkpoint signing key and FILE.pub")
    keygen.add_argument("--out", required=True, help="the private key file (written 0600)")
    keygen.add_argument("--name", default=DEFAULT_KEY_NAME, help="the key's (log's) name")
    keygen.add_argument("--json", action="store_true")
    keygen.set_defaults(func=failing_cleanly(cmd_keygen))
    checkpoint = commands.add_parser(
        "checkpoint", help="give new rows leaves, sign a checkpoint, append it to the log"
    )
    checkpoint.add_argument("--json", action="store_true")
    checkpoint.set_defaults(func=failing_cleanly(cmd_checkpoint))
    sources = argparse.ArgumentParser(add_help=False)
    sources.add_argument(
        "--checkpoints", metavar="FILE", help="checkpoint log (default: JACKPOT_CHECKPOINT_LOG)"
    )
    sources.add_argument(
        "--public-key",
        metavar="FILE",
        help="verifier key (default: that of JACKPOT_LEDGER_KEY_FILE)",
    )
    sources.add_argument("--json", action="store_true")
    prove = commands.add_parser(
        "prove",
        parents=[sources],
        help="a leaf and its inclusion proof against the newest checkpoint covering it (JSON)",
    )
    prove.add_argument("index", type=int, help="the leaf index")
    prove.set_defaults(func=failing_cleanly(cmd_prove))
    export = commands.add_parser(
        "export",
        parents=[sources],
        help="write the leaves (JSON lines), the checkpoints and the verifier key to a directory",
    )
    export.add_argument("--out", required=True, metavar="DIR")
    export.set_defaults(func=failing_cleanly(cmd_export))
