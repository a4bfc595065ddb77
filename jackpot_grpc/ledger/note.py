"""Signed notes (C2SP signed-note) with Ed25519 keys, as Go's golang.org/x/mod/sumdb/note.

    note      = text (lines, ending in "\\n") || "\\n" || signature line...
    signature = "— " name " " base64(key hash (4 bytes) || Ed25519 signature of text) "\\n"
    key hash  = the first 4 bytes of SHA-256(name || "\\n" || 0x01 || public key)

Keys are written as Go writes them, so Go's and other C2SP tools read them:

    verifier: name "+" hex(key hash) "+" base64(0x01 || public key)
    signer:   "PRIVATE+KEY+" name "+" hex(key hash) "+" base64(0x01 || private seed)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

ALG_ED25519 = 1
SIGNATURE_PREFIX = "— "  # an em dash and a space
PRIVATE_PREFIX = "PRIVATE+KEY+"


class NoteError(ValueError):
    """A key or note that is malformed, or a signature that does not verify."""


def _check_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() for c in name):
        raise NoteError(f"key name {name!r} must be non-empty, without '+' or spaces")


def key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes((ALG_ED25519,)) + public_key).digest()[:4]


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise NoteError(f"bad base64: {exc}") from exc


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _key_parts(text: str, kind: str, layout: str) -> tuple[str, str, bytes]:
    """A key's name, key-hash hex and 32 key bytes, from `name+hash+base64(alg || key)`."""
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise NoteError(f"a {kind} key is {layout}")
    name, hash_hex, encoded = parts
    _check_name(name)
    raw = _b64decode(encoded)
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise NoteError(f"not an Ed25519 {kind} key")
    return name, hash_hex, raw[1:]


@dataclass(frozen=True)
class Verifier:
    name: str
    public_key: bytes

    @property
    def key_hash(self) -> bytes:
        return key_hash(self.name, self.public_key)

    def text(self) -> str:
        encoded = base64.b64encode(bytes((ALG_ED25519,)) + self.public_key).decode()
        return f"{self.name}+{self.key_hash.hex()}+{encoded}"

    @classmethod
    def from_text(cls, text: str) -> Verifier:
        name, hash_hex, key = _key_parts(text.strip(), "verifier", "name+hash+key")
        verifier = cls(name, key)
        if verifier.key_hash.hex() != hash_hex:
            raise NoteError("the verifier key's hash does not match its key")
        return verifier

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    name: str
    seed: bytes

    @property
    def verifier(self) -> Verifier:
        key = Ed25519PrivateKey.from_private_bytes(self.seed)
        return Verifier(self.name, _public_bytes(key.public_key()))

    def text(self) -> str:
        encoded = base64.b64encode(bytes((ALG_ED25519,)) + self.seed).decode()
        return f"{PRIVATE_PREFIX}{self.name}+{self.verifier.key_hash.hex()}+{encoded}"

    @classmethod
    def from_text(cls, text: str) -> Signer:
        text = text.strip()
        if not text.startswith(PRIVATE_PREFIX):
            raise NoteError("a signer key starts with PRIVATE+KEY+")
        name, hash_hex, key = _key_parts(
            text[len(PRIVATE_PREFIX) :], "signer", "PRIVATE+KEY+name+hash+key"
        )
        signer = cls(name, key)
        if signer.verifier.key_hash.hex() != hash_hex:
            raise NoteError("the signer key's hash does not match its key")
        return signer

    @classmethod
    def generate(cls, name: str) -> Signer:
        _check_name(name)
        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return cls(name, seed)

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def sign_note(text: str, signer: Signer) -> str:
    """The signed note: text, a blank line, the signature line."""
    if not text.endswith("\n") or "\n\n" in text or text.startswith("\n"):
        raise NoteError("note text is non-empty lines, each ending in a newline")
    blob = signer.verifier.key_hash + signer.sign(text.encode())
    return f"{text}\n{SIGNATURE_PREFIX}{signer.name} {base64.b64encode(blob).decode()}\n"


def open_note(note: str, verifier: Verifier) -> str:
    """The note's text, if the verifier's key signed it; signatures by other keys are
    ignored (C2SP signed-note), but at least one must be by this key and verify."""
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteError("not a signed note")
    text, signatures = note[: split + 1], note[split + 2 :]
    found = False
    for line in signatures.splitlines():
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError(f"not a signature line: {line!r}")
        name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
        blob = _b64decode(encoded)
        if len(blob) < 5:
            raise NoteError("signature too short")
        if name != verifier.name or blob[:4] != verifier.key_hash:
            continue
        if not verifier.verify(text.encode(), blob[4:]):
            raise NoteError(f"the signature by {name} does not verify")
        found = True
    if not found:
        raise NoteError(f"no signature by {verifier.name}")
    return text
