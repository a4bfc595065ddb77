"""A verifier written from docs/LEDGER.md alone: hashlib, base64 and `cryptography`, no
import of the project's code. Tests use it to show an outsider can check the books."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DOC = Path(__file__).resolve().parents[1] / "docs" / "LEDGER.md"


class Invalid(Exception):
    pass


def read_verifier_key(text: str) -> tuple[str, bytes, bytes]:
    """(name, key hash, public key) of `name+hexhash+base64(0x01 || key)`."""
    name, hash_hex, encoded = text.strip().split("+", 2)
    raw = base64.b64decode(encoded)
    if raw[0] != 1 or len(raw) != 33:
        raise Invalid("not an Ed25519 key")
    key_hash = hashlib.sha256(name.encode() + b"\n\x01" + raw[1:]).digest()[:4]
    if key_hash.hex() != hash_hex:
        raise Invalid("key hash mismatch")
    return name, key_hash, raw[1:]


def open_checkpoint(note: str, key: tuple[str, bytes, bytes]) -> tuple[int, bytes, dict[str, int]]:
    """(tree size, root hash, pool amounts) of a signed checkpoint, if the key signed it."""
    name, key_hash, public = key
    text, _, signatures = note.rpartition("\n\n")
    text += "\n"
    ok = False
    for line in signatures.splitlines():
        signer, _, blob_b64 = line.removeprefix("— ").partition(" ")
        blob = base64.b64decode(blob_b64)
        if signer == name and blob[:4] == key_hash:
            Ed25519PublicKey.from_public_bytes(public).verify(blob[4:], text.encode())
            ok = True
    if not ok:
        raise Invalid("not signed by the key")
    origin, size, root_b64, *pools = text.splitlines()
    if origin != name:
        raise Invalid("origin is not the key's name")
    amounts = {}
    for line in pools:
        _, group, amount = line.split(" ")
        amounts[group] = int(amount)
    return int(size), base64.b64decode(root_b64), amounts


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def tree_hash(hashes: list[bytes]) -> bytes:
    """RFC 9162 MTH over leaf hashes, by its recursive definition."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return hashlib.sha256(b"\x01" + tree_hash(hashes[:k]) + tree_hash(hashes[k:])).digest()


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> None:
    """RFC 9162 2.1.3.2 (leaf is the leaf hash)."""
    if index >= size:
        raise Invalid("index beyond the tree")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise Invalid("proof too long")
        if fn % 2 == 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while fn % 2 == 0 and fn != 0:
                fn //= 2
                sn //= 2
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn //= 2
        sn //= 2
    if sn != 0 or r != root:
        raise Invalid("leaf is not in the tree")


def encode_leaf(
    version: int, event_type: int, texts: list[str | None], extension_from: int | None = None
) -> bytes:
    """Leaf bytes from a leaf's field texts in the doc's table order. The fields from
    `extension_from` on (the doc's "extension" rows) are left out when all are absent."""
    if extension_from is not None and all(t is None for t in texts[extension_from:]):
        texts = texts[:extension_from]
    out = bytes((version, event_type))
    for text in texts:
        if text is None:
            out += b"\xff\xff\xff\xff"
        else:
            data = text.encode()
            out += len(data).to_bytes(4, "big") + data
    return out


def decode_leaf(leaf: bytes) -> tuple[int, int, list[str | None]]:
    """(version, event type, field texts in order) of leaf bytes."""
    texts: list[str | None] = []
    at = 2
    while at < len(leaf):
        length = int.from_bytes(leaf[at : at + 4], "big")
        at += 4
        if length == 0xFFFFFFFF:
            texts.append(None)
            continue
        texts.append(leaf[at : at + length].decode())
        at += length
    return leaf[0], leaf[1], texts


def field_orders() -> dict[int, list[str]]:
    """Each event type's fields, in order, as docs/LEDGER.md's tables list them."""
    orders: dict[int, list[str]] = {}
    for block in re.split(r"(?=^Event type \d+:)", DOC.read_text(), flags=re.MULTILINE)[1:]:
        event = int(re.match(r"Event type (\d+):", block)[1])  # type: ignore[index]
        orders[event] = re.findall(r"^\| \d+ \| `(\w+)` \|", block, flags=re.MULTILINE)
    return orders


def extension_starts() -> dict[int, int]:
    """Each event type's number of fields before its extension (the doc's "extension" rows)."""
    starts: dict[int, int] = {}
    for block in re.split(r"(?=^Event type \d+:)", DOC.read_text(), flags=re.MULTILINE)[1:]:
        event = int(re.match(r"Event type (\d+):", block)[1])  # type: ignore[index]
        rows = re.findall(r"^\| \d+ \| `\w+` \| \w+ \| ([\w ]+) \|", block, flags=re.MULTILINE)
        starts[event] = sum(1 for absent in rows if absent != "extension")
    return starts
