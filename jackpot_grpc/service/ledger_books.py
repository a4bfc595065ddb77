"""Signing checkpoints of the ledger's tree and auditing the rows against them.

A checkpoint is signed only if the tree still has the root of the last checkpoint in the
log at its size (a signer never blesses books that changed under an earlier checkpoint),
and is appended to the log file (flushed to disk) after the leaves it covers committed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from jackpot_grpc.adapters import ledger_store
from jackpot_grpc.ledger import merkle
from jackpot_grpc.ledger.checkpoint import Checkpoint, log_entry
from jackpot_grpc.ledger.note import Signer
from jackpot_grpc.ledger.verify import CheckpointAudit, LeafRecord, audit, read_checkpoints


class LedgerBooksError(Exception):
    """A checkpoint that must not be signed, or a key or log that cannot be used."""


@dataclass(frozen=True)
class Signed:
    checkpoint: Checkpoint
    note: str
    new_leaves: int


def read_signer(path: Path) -> Signer:
    try:
        return Signer.from_text(path.read_text())
    except (OSError, ValueError) as exc:
        raise LedgerBooksError(f"ledger key {path}: {exc}") from exc


def _last_checkpoint(log: Path, signer: Signer) -> Checkpoint | None:
    if not log.exists():
        return None
    checkpoints, problems = read_checkpoints(log.read_text(), signer.verifier)
    if problems:
        raise LedgerBooksError(f"checkpoint log {log}: {problems[0]}")
    return checkpoints[-1] if checkpoints else None


def _root_at(hashes: list[bytes], size: int) -> bytes:
    frontier = merkle.Frontier()
    for leaf in hashes[:size]:
        frontier.append(leaf)
    return frontier.root()


def append_to_log(log: Path, note: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as out:
        out.write(log_entry(note))
        out.flush()
        os.fsync(out.fileno())


def sign_checkpoint(
    url: str, signer: Signer, log: Path, *, wait: bool = True, only_if_new: bool = False
) -> Signed | None:
    """Give new rows leaves, sign a checkpoint of the whole tree, append it to the log.
    None: another process holds the signer's lock (wait=False), or nothing is new."""
    last = _last_checkpoint(log, signer)
    with ledger_store.checkpoint_snapshot(url, wait=wait) as snapshot:
        if snapshot is None:
            return None
        hashes = snapshot.leaf_hashes
        if last is not None:
            if last.size > len(hashes) or _root_at(hashes, last.size) != last.root_hash:
                raise LedgerBooksError(
                    f"the ledger no longer matches the checkpoint of size {last.size} in {log}:"
                    " run jackpot audit --checkpoints"
                )
            if only_if_new and last.size == len(hashes):
                return None
        checkpoint = Checkpoint(
            signer.name, len(hashes), _root_at(hashes, len(hashes)), tuple(snapshot.pools.items())
        )
        assigned = snapshot.assigned
    note = checkpoint.sign(signer)
    append_to_log(log, note)
    return Signed(checkpoint, note, assigned)


def audit_against_checkpoints(
    url: str, log_text: str, signer_verifier_text: str
) -> CheckpointAudit:
    """The full rebuild: every checkpoint in the log verified, every row re-encoded."""
    from jackpot_grpc.ledger.note import Verifier

    verifier = Verifier.from_text(signer_verifier_text)
    checkpoints, problems = read_checkpoints(log_text, verifier)
    snapshot = ledger_store.audit_snapshot(url)
    records = (
        LeafRecord(leaf.index, leaf.table, leaf.row_id, leaf.ledger_seq, leaf.leaf_hash)
        for leaf in snapshot.leaves
    )
    result = audit(checkpoints, records, snapshot.rows, snapshot.pools)
    result.findings[:0] = problems
    return result
