"""Signing checkpoints of the ledger's tree and auditing the rows against them.
(Both sides of one trust boundary in one module: the signer's refusals and the auditor's
checks must agree, so they are read together.)

A checkpoint is signed only if the tree still has the root of the last checkpoint in the
log at its size (a signer never blesses books that changed under an earlier checkpoint),
and is appended to the log file (flushed to disk) after the leaves it covers committed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jackpot_grpc.adapters import ledger_store
from jackpot_grpc.adapters.database import DbPool
from jackpot_grpc.adapters.database_liveness import ClusterIdentity
from jackpot_grpc.adapters.pool_store import Conn
from jackpot_grpc.domain.errors import LeafNotInCheckpoint
from jackpot_grpc.domain.model import AuditBase, Group
from jackpot_grpc.ledger import merkle
from jackpot_grpc.ledger.checkpoint import Checkpoint, log_entry, open_checkpoint
from jackpot_grpc.ledger.leaf import EventType, canonical_fields, encode_texts
from jackpot_grpc.ledger.note import Signer, Verifier
from jackpot_grpc.ledger.rows import EVENT_OF_TABLE, leaf_values
from jackpot_grpc.ledger.verify import CheckpointAudit, LeafRecord, audit, read_checkpoints


class LedgerBooksError(Exception):
    """A checkpoint that must not be signed, or a key or log that cannot be used."""


class HistoryChanged(LedgerBooksError):
    """The database is no longer the history whose tree a signer holds in memory (a
    failover, a restore, another database): it signs no more until restarted."""


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


def append_to_log(log: Path, note: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as out:
        out.write(log_entry(note))
        out.flush()
        os.fsync(out.fileno())


class CheckpointSigner:
    """Signs checkpoints of the tree, keeping it in memory (its frontier) so each signing
    reads only the leaves since the last. The first signing reads them all and checks the
    tree against the last checkpoint in the log: a signer never blesses books that
    changed under an earlier checkpoint."""

    def __init__(self, signer: Signer, log: Path, *, keep_connection: bool = False) -> None:
        self.signer = signer
        self.log = log
        # The server's signer keeps its connection between turns (close() ends it).
        self._connection = ledger_store.SignerConnection() if keep_connection else None
        self._frontier: merkle.Frontier | None = None
        self._signed_size: int | None = None  # the tree size of the last checkpoint known
        self.latest: str | None = None  # the last signed note this process knows
        # What the frontier was read from: the database's history, and the last leaf's hash.
        self._identity: ClusterIdentity | None = None
        self._last_hash: bytes | None = None

    def _extend(
        self, base: merkle.Frontier, hashes: bytes, last: Checkpoint | None
    ) -> merkle.Frontier:
        """The frontier with the new hashes (concatenated), checked against `last` on the
        way."""
        frontier = base.copy()
        if last is not None and frontier.size <= last.size:
            # Up to the last checkpoint's size, check its root there, then the rest.
            upto = (last.size - frontier.size) * merkle.HASH_SIZE
            frontier.extend(hashes[:upto])
            hashes = hashes[upto:]
            if frontier.size == last.size:
                self._check(last, frontier)
            else:
                raise LedgerBooksError(
                    f"the log's last checkpoint covers {last.size} leaves; the ledger has"
                    f" {frontier.size}: run jackpot audit --checkpoints"
                )
        frontier.extend(hashes)
        return frontier

    def _check(self, last: Checkpoint, frontier: merkle.Frontier) -> None:
        if frontier.root() != last.root_hash:
            raise LedgerBooksError(
                f"the ledger no longer matches the checkpoint of size {last.size} in"
                f" {self.log}: run jackpot audit --checkpoints"
            )

    def _same_history(self, snapshot: ledger_store.LedgerSnapshot) -> None:
        """The tree in memory goes on only over the history it was read from: the same
        cluster and timeline, and the leaf below the new ones as it was. Else the new
        leaves would be appended to another history's tree (after a failover the signing
        worker may reconnect before the failover watch halts it)."""
        if self._identity is not None and snapshot.identity != self._identity:
            was, now = self._identity, snapshot.identity
            raise HistoryChanged(
                f"the database changed under the signer: system identifier"
                f" {was.system_identifier} timeline {was.timeline} -> system identifier"
                f" {now.system_identifier} timeline {now.timeline}; the signer checks the new"
                " primary against the log's last checkpoint before it signs again"
            )
        if self._frontier is not None and snapshot.previous != self._last_hash:
            raise HistoryChanged(
                f"leaf {self._frontier.size - 1} of the ledger is not the one the last"
                f" checkpoint this signer made covers (of size {self._frontier.size}); the"
                " signer checks the database against the log's last checkpoint before it"
                " signs again"
            )

    def sign(self, url: str, *, wait: bool = True, only_if_new: bool = False) -> Signed | None:
        """Give new rows leaves, sign a checkpoint of the whole tree, append it to the log.
        None: another process holds the signer's lock (wait=False), or nothing is new."""
        last = _last_checkpoint(self.log, self.signer) if self._frontier is None else None
        if last is not None:
            self._signed_size = last.size
        base = self._frontier or merkle.Frontier()
        with ledger_store.checkpoint_snapshot(
            url, wait=wait, since=base.size, kept=self._connection
        ) as snapshot:
            if snapshot is None:
                return None
            try:
                self._same_history(snapshot)
            except HistoryChanged:
                # Forget the tree read from the old history: the next turn rebuilds it from
                # the database and signs only if it still has the log's last checkpoint
                # (a clean switchover goes on; a fork or a loss is refused every turn).
                self._frontier = self._identity = self._last_hash = None
                raise
            frontier = self._extend(base, snapshot.leaf_hashes, last)
            new = snapshot.leaf_hashes
            last_hash = new[-merkle.HASH_SIZE :] if new else self._last_hash
            if only_if_new and frontier.size == self._signed_size:
                # Nothing was given a leaf: this is committed (and replicated).
                self._frontier, self._identity = frontier, snapshot.identity
                self._last_hash = last_hash
                return None
            checkpoint = Checkpoint(
                self.signer.name, frontier.size, frontier.root(), tuple(snapshot.pools.items())
            )
            assigned = snapshot.assigned
        # The leaves committed; the frontier is theirs now.
        self._frontier, self._signed_size = frontier, frontier.size
        self._identity, self._last_hash = snapshot.identity, last_hash
        note = checkpoint.sign(self.signer)
        append_to_log(self.log, note)
        self.latest = note
        return Signed(checkpoint, note, assigned)

    @property
    def backend_pid(self) -> int | None:
        """The kept connection's server process (None: none kept)."""
        return None if self._connection is None else self._connection.backend_pid

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


def sign_checkpoint(url: str, signer: Signer, log: Path) -> Signed:
    """One checkpoint now (waiting for another signer to finish)."""
    signed = CheckpointSigner(signer, log).sign(url)
    assert signed is not None  # waits for the lock; signs even when nothing is new
    return signed


@dataclass(frozen=True)
class AuditState:
    """Where an audit found the rows proved: the tree at a checkpoint (its frontier) and
    the highest ledger_seq under it. Kept by the auditor, outside the database."""

    size: int
    root: bytes
    seq: int
    frontier: merkle.Frontier
    # Where the arithmetic audit (books_audit.audit_ledger_from) left the books clean, for
    # the next one to go on from; None: the next one re-proves every row.
    books: AuditBase | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "size": self.size,
                "root": self.root.hex(),
                "ledger_seq": self.seq,
                "frontier": [[count, node.hex()] for count, node in self.frontier.nodes()],
                "books": None if self.books is None else _base_json(self.books),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> AuditState:
        data = json.loads(text)
        frontier = merkle.Frontier.from_nodes(
            [(int(count), bytes.fromhex(node)) for count, node in data["frontier"]]
        )
        state = cls(int(data["size"]), bytes.fromhex(data["root"]), int(data["ledger_seq"]),
                    frontier)  # fmt: skip
        if frontier.size != state.size or frontier.root() != state.root:
            raise ValueError("the frontier does not give the recorded tree")
        books = data.get("books")
        # A base without the reserve and overflow sums cannot go on: a full audit then.
        usable = books is not None and "meters" in books
        return dataclasses.replace(state, books=_base_of(books) if usable else None)


def _base_json(base: AuditBase) -> dict[str, Any]:
    return {
        "head": base.head,
        "pools": {g.value: amount for g, amount in base.pools.items()},
        "sums": {g.value: list(sums) for g, sums in base.sums.items()},
        "counts": {g.value: list(counts) for g, counts in base.counts.items()},
        "contribution_count": base.contribution_count,
        "total_wagered": base.total_wagered,
        "max_ids": base.max_ids,
        "without_rate": base.without_rate,
        "unsequenced": base.unsequenced,
        "meters": {g.value: list(meters) for g, meters in base.meters.items()},
    }


def _base_of(data: dict[str, Any]) -> AuditBase:
    def three(value: list[int]) -> tuple[int, int, int]:
        a, b, c = (int(v) for v in value)
        return a, b, c

    def five(value: list[int]) -> tuple[int, int, int, int, int]:
        a, b, c, d, e = (int(v) for v in value)
        return a, b, c, d, e

    def two(value: list[int]) -> tuple[int, int]:
        a, b = (int(v) for v in value)
        return a, b

    return AuditBase(
        head=int(data["head"]),
        pools={Group(g): int(v) for g, v in data["pools"].items()},
        sums={Group(g): three(v) for g, v in data["sums"].items()},
        counts={Group(g): two(v) for g, v in data["counts"].items()},
        contribution_count=int(data["contribution_count"]),
        total_wagered=int(data["total_wagered"]),
        max_ids={str(t): int(v) for t, v in data["max_ids"].items()},
        without_rate=int(data["without_rate"]),
        unsequenced=int(data["unsequenced"]),
        meters={Group(g): five(v) for g, v in data["meters"].items()},
    )


def audit_against_checkpoints(
    url: str, log_text: str, verifier_text: str, state: AuditState | None = None
) -> tuple[CheckpointAudit, AuditState | None]:
    """Every checkpoint in the log verified; the rows rebuilt from `state` (an earlier
    audit's, used only if a signed checkpoint in the log has its size and root), else all
    of them. Returns the findings and the state the next audit may start from."""
    verifier = Verifier.from_text(verifier_text)
    checkpoints, problems = read_checkpoints(log_text, verifier)
    if state is not None and not any(
        c.size == state.size and c.root_hash == state.root for c in checkpoints
    ):
        state = None  # no signed checkpoint vouches for it: rebuild everything
    since = state.size if state is not None else 0
    snapshot = ledger_store.audit_snapshot(url, since)
    records = (
        LeafRecord(leaf.index, leaf.table, leaf.row_id, leaf.ledger_seq, leaf.leaf_hash)
        for leaf in snapshot.leaves
    )
    result = audit(
        checkpoints,
        records,
        snapshot.rows,
        snapshot.pools,
        trusted=state.frontier if state is not None else None,
        trusted_seq=state.seq if state is not None else 0,
        head=(snapshot.head.size, snapshot.head.receipts_from),
    )
    result.findings[:0] = problems
    after = None
    if result.ok and result.verified_frontier is not None:
        frontier = result.verified_frontier
        after = AuditState(frontier.size, frontier.root(), result.verified_seq, frontier)
    return result, after


@dataclass(frozen=True)
class ExportedLeaf:
    index: int
    table: str
    row_id: int
    event_type: int
    fields: dict[str, str | None]
    leaf: bytes

    def as_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "event_type": self.event_type,
            "event": EventType(self.event_type).name.lower(),
            "table": self.table,
            "id": self.row_id,
            "fields": self.fields,
            "leaf": self.leaf.hex(),
        }


def export_leaves(url: str) -> list[ExportedLeaf]:
    """Every leaf as its row encodes it now (a leaf whose row is gone is left out: the
    audit names it)."""
    snapshot = ledger_store.audit_snapshot(url)
    out = []
    for leaf in snapshot.leaves:
        row = snapshot.rows[leaf.table].get(leaf.row_id)
        if row is None:
            continue
        event = EVENT_OF_TABLE[leaf.table]
        fields = canonical_fields(event, leaf_values(leaf.table, row, leaf.index))
        out.append(
            ExportedLeaf(
                leaf.index, leaf.table, leaf.row_id, int(event), fields, encode_texts(event, fields)
            )
        )
    return out


@dataclass(frozen=True)
class LeafProof:
    leaf: ExportedLeaf
    tree_size: int
    proof: list[bytes]
    checkpoint: str

    def as_json(self) -> dict[str, object]:
        return {
            **self.leaf.as_json(),
            "leaf_hash": merkle.leaf_hash(self.leaf.leaf).hex(),
            "tree_size": self.tree_size,
            "inclusion_proof": [p.hex() for p in self.proof],
            "checkpoint": self.checkpoint,
        }


def prove(url: str, index: int, notes: list[str], verifier: Verifier) -> LeafProof:
    """Leaf `index` and its inclusion proof against the newest checkpoint that covers it."""
    checkpoints = [(note, open_checkpoint(note, verifier)) for note in notes]
    covering = [(note, c) for note, c in checkpoints if c.size > index]
    if not covering:
        raise LedgerBooksError(f"no checkpoint covers leaf {index} yet")
    note, checkpoint = covering[-1]
    leaves = {leaf.index: leaf for leaf in export_leaves(url)}
    hashes = ledger_store.recorded_hashes(url)
    if index not in leaves or len(hashes) < checkpoint.size:
        raise LedgerBooksError(f"leaf {index} is not in the ledger (jackpot audit names why)")
    proof = merkle.inclusion_proof(index, hashes[: checkpoint.size])
    return LeafProof(leaves[index], checkpoint.size, proof, note)


class LedgerProofs:
    """GetLedgerProof: one leaf proved against the newest checkpoint this server knows.

    The tree's interior (merkle.ProofTree: a hash per whole block of leaves and the levels
    above) is kept as leaves arrive, so a proof reads the leaf, its row and at most two
    blocks of leaf hashes over a pooled connection, and hashes O(log n) nodes; the first
    proof (or one after many new leaves) reads the hashes it has not seen yet, once."""

    CATCH_UP_CHUNK = 64 * merkle.BLOCK  # leaf hashes read (and hashed) at a time

    def __init__(
        self, db_pool: DbPool, latest: Callable[[], str | None], verifier: Verifier
    ) -> None:
        self._db_pool = db_pool
        self._latest = latest
        self._verifier = verifier
        self._tree = merkle.ProofTree()
        self._growing = asyncio.Lock()  # one catch-up at a time

    async def _catch_up(self, conn: Conn, size: int) -> None:
        whole = size - size % merkle.BLOCK
        async with self._growing:
            while self._tree.size < whole:
                start = self._tree.size
                end = min(whole, start + self.CATCH_UP_CHUNK)
                hashes = await ledger_store.leaf_hash_range(conn, start, end)
                if len(hashes) != end - start:
                    raise LeafNotInCheckpoint(f"the ledger lacks leaves below {end}")
                # Hashing a chunk is CPU work: off the event loop.
                await asyncio.to_thread(self._tree.add_blocks, hashes)

    async def prove(
        self, *, leaf_index: int | None = None, row: tuple[str, int] | None = None
    ) -> LeafProof:
        note = self._latest()
        if note is None:
            raise LeafNotInCheckpoint("no ledger checkpoint is signed yet")
        checkpoint = open_checkpoint(note, self._verifier)
        size = checkpoint.size
        async with self._db_pool.connection() as conn:
            found = await ledger_store.proof_leaf(conn, leaf_index=leaf_index, row=row)
            if found is None or found[0].index >= size:
                what = f"leaf {leaf_index}" if row is None else f"{row[0]} #{row[1]}"
                raise LeafNotInCheckpoint(
                    f"{what} is in no signed checkpoint yet (the newest covers {size})"
                )
            leaf, record = found
            await self._catch_up(conn, size)
            leaves = {
                start: await ledger_store.leaf_hash_range(conn, start, end)
                for start, end in self._tree.blocks_for(leaf.index, size)
            }
        event = EVENT_OF_TABLE[leaf.table]
        fields = canonical_fields(event, leaf_values(leaf.table, record, leaf.index))
        exported = ExportedLeaf(
            leaf.index, leaf.table, leaf.row_id, int(event), fields, encode_texts(event, fields)
        )
        proof = self._tree.inclusion_proof(leaf.index, size, leaves)
        return LeafProof(exported, size, proof, note)
