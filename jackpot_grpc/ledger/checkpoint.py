"""Checkpoints (C2SP tlog-checkpoint) of the ledger's tree, and the file that keeps them.

    origin\\n                    the log's name: the signing key's name
    tree size\\n                 decimal, no leading zeros
    base64(root hash)\\n         standard base64, with padding
    pool <group> <amount>\\n     one extension line per pool: its amount at that size

A checkpoint log file holds signed notes one after another, each followed by a blank line.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass

from jackpot_grpc.ledger.merkle import HASH_SIZE
from jackpot_grpc.ledger.note import NoteError, Signer, Verifier, open_note, sign_note

_SIZE = re.compile(r"0|[1-9][0-9]*")
_POOL = re.compile(r"pool ([a-z]+) (0|[1-9][0-9]*)")


class CheckpointError(ValueError):
    """A checkpoint that is malformed or whose signature does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    pools: tuple[tuple[str, int], ...]

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        lines += [f"pool {group} {amount}" for group, amount in self.pools]
        return "".join(f"{line}\n" for line in lines)

    def sign(self, signer: Signer) -> str:
        if signer.name != self.origin:
            raise CheckpointError("a checkpoint is signed by the key named as its origin")
        return sign_note(self.text(), signer)

    def pool_amounts(self) -> dict[str, int]:
        return dict(self.pools)


def parse_checkpoint(text: str) -> Checkpoint:
    """A checkpoint body (the note's text), refusing anything not in canonical form."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise CheckpointError("a checkpoint is origin, size and root hash lines")
    origin, size, root_b64, *extensions = lines[:-1]
    if not origin or not _SIZE.fullmatch(size):
        raise CheckpointError("bad origin or tree size line")
    try:
        root_hash = base64.b64decode(root_b64, validate=True)
    except binascii.Error as exc:
        raise CheckpointError("root hash is not base64") from exc
    if len(root_hash) != HASH_SIZE or base64.b64encode(root_hash).decode() != root_b64:
        raise CheckpointError("root hash is not 32 bytes in canonical base64")
    pools = []
    for line in extensions:
        match = _POOL.fullmatch(line)
        if not match:
            raise CheckpointError(f"unknown extension line {line!r}")
        pools.append((match[1], int(match[2])))
    return Checkpoint(origin, int(size), root_hash, tuple(pools))


def open_checkpoint(note: str, verifier: Verifier) -> Checkpoint:
    """The checkpoint a signed note holds, if the verifier signed it and its origin."""
    try:
        text = open_note(note, verifier)
    except NoteError as exc:
        raise CheckpointError(str(exc)) from exc
    checkpoint = parse_checkpoint(text)
    if checkpoint.origin != verifier.name:
        raise CheckpointError(f"origin {checkpoint.origin} is not the key's {verifier.name}")
    return checkpoint


def split_log(content: str) -> Iterator[str]:
    """The signed notes of a checkpoint log file, in order: each note is its text lines,
    a blank line, its signature lines, and a blank line after it."""
    note: list[str] = []
    in_signatures = False
    for line in content.splitlines(keepends=True):
        if line == "\n":
            if in_signatures:
                yield "".join(note)
                note, in_signatures = [], False
            else:
                note.append(line)
                in_signatures = True
            continue
        note.append(line)
    if note:
        if not in_signatures:
            raise CheckpointError("the checkpoint log ends inside a note")
        yield "".join(note)


def log_entry(signed_note: str) -> str:
    """What is appended to the checkpoint log for one signed note."""
    return signed_note + "\n"
