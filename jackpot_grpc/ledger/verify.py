"""The audit against signed checkpoints: rebuild the tree from the rows, compare.

Pure: the caller reads the checkpoint log, the leaves, the rows and the pools (one
snapshot) and hands them here. What is checked:

- every checkpoint's signature, its origin, sizes that never shrink;
- each leaf, in index order, gap-free: its row still exists, still encodes to the leaf hash
  recorded when it became a leaf, keeps its ledger_seq and carries its own index (rows
  from before receipts, migration 0013, may carry none);
- the tree rebuilt from the rows has each checkpoint's root at its size;
- no row outside the log except those committed after the last leaf (pending), whose
  claimed indexes follow the last leaf gap-free up to the ledger head;
- each pool's amount is the latest checkpoint's plus every leaf and pending row after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jackpot_grpc.ledger import merkle
from jackpot_grpc.ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    split_log,
)
from jackpot_grpc.ledger.leaf import LeafEncodingError
from jackpot_grpc.ledger.note import Verifier
from jackpot_grpc.ledger.rows import leaf_of, pool_deltas

CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class Finding:
    """One thing wrong: the row (table and id), or a checkpoint (its number in the file,
    from 1), or a pool (table "jackpots", the group)."""

    table: str
    row_id: int | str | None
    problem: str
    leaf_index: int | None = None

    def __str__(self) -> str:
        where = f"{self.table} #{self.row_id}" if self.row_id is not None else self.table
        leaf = f" (leaf {self.leaf_index})" if self.leaf_index is not None else ""
        return f"{where}{leaf}: {self.problem}"


@dataclass(frozen=True)
class LeafRecord:
    index: int
    table: str
    row_id: int
    ledger_seq: int | None
    leaf_hash: bytes


@dataclass
class CheckpointAudit:
    checkpoints: int = 0
    leaves: int = 0
    pending: int = 0
    latest_size: int | None = None
    findings: list[Finding] = field(default_factory=list)
    # The tree at the latest checkpoint, as rebuilt (and its top ledger_seq): what the next
    # incremental audit may start from, if this one found nothing.
    verified_frontier: merkle.Frontier | None = None
    verified_seq: int = 0
    started_at: int = 0  # the leaves an incremental audit took as proved

    @property
    def ok(self) -> bool:
        return not self.findings

    def first_bad(self) -> Finding | None:
        return self.findings[0] if self.findings else None


def read_checkpoints(content: str, verifier: Verifier) -> tuple[list[Checkpoint], list[Finding]]:
    """Every checkpoint of a log file, each signature verified; a bad one is a finding."""
    found: list[Checkpoint] = []
    problems: list[Finding] = []
    try:
        notes = list(split_log(content))
    except CheckpointError as exc:
        return [], [Finding(CHECKPOINTS, None, str(exc))]
    for number, note in enumerate(notes, 1):
        try:
            checkpoint = open_checkpoint(note, verifier)
        except CheckpointError as exc:
            problems.append(Finding(CHECKPOINTS, number, f"does not verify: {exc}"))
            continue
        if found and checkpoint.size < found[-1].size:
            problems.append(Finding(CHECKPOINTS, number, "its tree is smaller than the last"))
            continue
        found.append(checkpoint)
    return found, problems


def audit(
    checkpoints: list[Checkpoint],
    leaves: Iterable[LeafRecord],
    rows: Mapping[str, dict[int, dict[str, Any]]],
    pools: Mapping[str, int],
    trusted: merkle.Frontier | None = None,
    trusted_seq: int = 0,
    head: tuple[int, int] | None = None,
) -> CheckpointAudit:
    """`rows` by table and id: every row is consumed by its leaf or judged pending/inserted.

    Incremental: from `trusted` (the tree of an earlier audit's checkpoint, its rows proved
    then; `trusted_seq` the highest ledger_seq among them), only the leaves after it are
    read and rebuilt, and only the checkpoints from it on are compared.

    `head`: the ledger head's (size, receipts_from), the indexes handed out and the first
    one every row carries; None for a ledger from before receipts."""
    head_size, receipts_from = head if head is not None else (None, 0)
    result = CheckpointAudit(checkpoints=len(checkpoints))
    result.started_at = trusted.size if trusted is not None else 0
    result.verified_seq = trusted_seq
    unclaimed = {table: dict(by_id) for table, by_id in rows.items()}
    by_size: dict[int, list[tuple[int, Checkpoint]]] = {}
    for number, checkpoint in enumerate(checkpoints, 1):
        by_size.setdefault(checkpoint.size, []).append((number, checkpoint))
    latest = checkpoints[-1] if checkpoints else None
    after_latest: dict[str, int] = {}
    frontier = trusted.copy() if trusted is not None else merkle.Frontier()
    for size in [size for size in by_size if size < frontier.size]:
        del by_size[size]  # proved by the audit that trusted them
    result.verified_frontier = frontier.copy() if latest and latest.size == frontier.size else None
    top_seq = trusted_seq
    pending_first_bad: list[Finding] = []

    def check_roots() -> None:
        for number, checkpoint in by_size.pop(frontier.size, []):
            if checkpoint.root_hash != frontier.root():
                result.findings.append(
                    Finding(
                        CHECKPOINTS,
                        number,
                        f"the rows no longer give its root at size {checkpoint.size}:"
                        " a row before it was changed, deleted, inserted or reordered",
                    )
                )

    check_roots()
    for leaf in leaves:
        if leaf.index != frontier.size:
            result.findings.append(
                Finding("ledger_leaves", leaf.index, f"leaf {frontier.size} is missing")
            )
            break
        row = unclaimed.get(leaf.table, {}).pop(leaf.row_id, None)
        recomputed = leaf.leaf_hash
        if row is None:
            result.findings.append(
                Finding(leaf.table, leaf.row_id, "deleted: its leaf has no row", leaf.index)
            )
        else:
            try:
                recomputed = merkle.leaf_hash(leaf_of(leaf.table, row, leaf.index))
            except LeafEncodingError as exc:
                result.findings.append(Finding(leaf.table, leaf.row_id, str(exc), leaf.index))
            if recomputed != leaf.leaf_hash:
                result.findings.append(
                    Finding(leaf.table, leaf.row_id, "changed since it became a leaf", leaf.index)
                )
            if row.get("ledger_seq") != leaf.ledger_seq:
                result.findings.append(
                    Finding(leaf.table, leaf.row_id, "its ledger_seq changed", leaf.index)
                )
            claimed = row.get("leaf_index")
            if claimed != leaf.index and (claimed is not None or leaf.index >= receipts_from):
                result.findings.append(
                    Finding(
                        leaf.table,
                        leaf.row_id,
                        f"carries leaf index {claimed}, but it is leaf {leaf.index}",
                        leaf.index,
                    )
                )
            if latest is not None and leaf.index >= latest.size:
                for group, delta in pool_deltas(leaf.table, row).items():
                    after_latest[group] = after_latest.get(group, 0) + delta
        top_seq = max(top_seq, leaf.ledger_seq or 0)
        frontier.append(recomputed)
        check_roots()
        if latest is not None and frontier.size == latest.size:
            result.verified_frontier, result.verified_seq = frontier.copy(), top_seq
    result.leaves = frontier.size
    for sizes in by_size.values():
        for number, checkpoint in sizes:
            result.findings.append(
                Finding(
                    CHECKPOINTS,
                    number,
                    f"covers {checkpoint.size} leaves; the log has {frontier.size}:"
                    " leaves were deleted",
                )
            )
    waiting: list[tuple[int, str, int, dict[str, Any]]] = []
    for table, by_id in unclaimed.items():
        for row_id, row in sorted(by_id.items()):
            claimed = row.get("leaf_index")
            if claimed is not None and claimed >= frontier.size:
                waiting.append((int(claimed), table, row_id, row))
            elif claimed is not None:
                pending_first_bad.append(
                    Finding(table, row_id, f"inserted: claims leaf {claimed}, another row's")
                )
            else:
                pending_first_bad.append(
                    Finding(table, row_id, "inserted: a row with no place in the log")
                )
    # Rows committed after the last leaf: their indexes follow it without a gap (a gap is
    # a row deleted before it became a leaf), up to the head.
    expected = frontier.size
    for claimed, table, row_id, row in sorted(waiting, key=lambda w: w[0]):
        if claimed != expected:
            pending_first_bad.append(
                Finding(
                    table,
                    row_id,
                    f"claims leaf {claimed}, but leaf {expected} has no row: deleted"
                    " before it became a leaf",
                )
            )
        expected = claimed + 1
        result.pending += 1
        for group, delta in pool_deltas(table, row).items():
            after_latest[group] = after_latest.get(group, 0) + delta
    if head_size is not None and expected < head_size:
        pending_first_bad.append(
            Finding(
                "ledger_head",
                "size",
                f"{head_size} leaf indexes were handed out; rows carry {expected}:"
                " the last rows were deleted before they became leaves",
            )
        )
    elif head_size is not None and expected > head_size:
        pending_first_bad.append(
            Finding(
                "ledger_head",
                "size",
                f"only {head_size} leaf indexes were handed out; rows carry {expected}",
            )
        )
    result.findings.extend(pending_first_bad)
    if latest is not None:
        result.latest_size = latest.size
        for group, amount in latest.pools:
            expected = amount + after_latest.get(group, 0)
            if pools.get(group) != expected:
                result.findings.append(
                    Finding(
                        "jackpots",
                        group,
                        f"amount {pools.get(group)}; the latest checkpoint's {amount}"
                        f" plus the rows after it give {expected}",
                    )
                )
    result.findings.sort(key=_finding_order)
    return result


def _finding_order(finding: Finding) -> tuple[int, int]:
    """Rows by leaf index first (the first bad row leads), then the rest as found."""
    return (0, finding.leaf_index) if finding.leaf_index is not None else (1, 0)
