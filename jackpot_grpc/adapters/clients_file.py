"""The clients file (JACKPOT_CLIENTS_FILE): who may call the service, and with which roles.

JSON, written atomically (a temporary file in the same directory, fsynced, renamed over
the old one) with mode 0600, so a running server never reads half a file:

    {"version": 1, "clients": [{"name": "slots-eu", "roles": ["game"],
      "token_sha256": "<hex>", "cert_subjects": ["slots-eu.example"],
      "created_at": "...", "revoked_at": null}]}

Only a SHA-256 of each token is stored. That is enough because our tokens are 256 random
bits (`new_token`): a slow password hash (bcrypt, scrypt) protects low-entropy secrets
from guessing, which a 256-bit random value does not need, and it would cost every RPC.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jackpot_grpc.domain.roles import ROLES

FORMAT_VERSION = 1
TOKEN_PREFIX = "jpk_"  # recognisable in a leaked-secret scan


class ClientsFileError(ValueError):
    """The clients file cannot be read, or a change to it is not allowed."""


@dataclass(frozen=True)
class ClientRecord:
    name: str
    roles: tuple[str, ...]
    token_sha256: str | None = None
    cert_subjects: tuple[str, ...] = ()
    created_at: str = field(default_factory=lambda: _now())
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _record(raw: Any, where: str) -> ClientRecord:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ClientsFileError(f"{where}: each client needs a non-empty string 'name'")
    roles = raw.get("roles")
    if not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles):
        raise ClientsFileError(f"{where}: client {raw['name']!r}: roles must be some of {ROLES}")
    digest = raw.get("token_sha256")
    if digest is not None and (not isinstance(digest, str) or len(digest) != 64):
        raise ClientsFileError(f"{where}: client {raw['name']!r}: token_sha256 must be 64 hex")
    subjects = raw.get("cert_subjects") or []
    if not isinstance(subjects, list) or not all(isinstance(s, str) and s for s in subjects):
        raise ClientsFileError(f"{where}: client {raw['name']!r}: cert_subjects must be strings")
    return ClientRecord(
        name=raw["name"],
        roles=tuple(roles),
        token_sha256=digest,
        cert_subjects=tuple(subjects),
        created_at=str(raw.get("created_at") or ""),
        revoked_at=raw.get("revoked_at") or None,
    )


def load(path: Path) -> list[ClientRecord]:
    """Every client in the file (revoked ones too); no file yet means no clients."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ClientsFileError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("clients"), list):
        raise ClientsFileError(f"{path}: expected an object with a 'clients' list")
    records = [_record(raw, str(path)) for raw in data["clients"]]
    names = [r.name for r in records]
    if len(set(names)) != len(names):
        raise ClientsFileError(f"{path}: client names must be unique")
    return records


def save(path: Path, records: list[ClientRecord]) -> None:
    body = {
        "version": FORMAT_VERSION,
        "clients": [
            {**r.__dict__, "roles": list(r.roles), "cert_subjects": list(r.cert_subjects)}
            for r in records
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(body, out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[list[ClientRecord]]:
    """Read-modify-write under an exclusive lock, so two `jackpot clients` never race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        records = load(path)
        yield records
        save(path, records)
    finally:
        os.close(lock_fd)


def add_client(
    path: Path, name: str, role: str, *, cert_subjects: tuple[str, ...] = (), token: bool = True
) -> str | None:
    """Create a client; its new token (shown once, stored only as a hash), if it has one."""
    if role not in ROLES:
        raise ClientsFileError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if not token and not cert_subjects:
        raise ClientsFileError("a client needs a token or a certificate subject")
    secret = new_token() if token else None
    with _locked(path) as records:
        if any(r.name == name for r in records):
            raise ClientsFileError(f"client {name!r} already exists (revoked ones keep their name)")
        taken = {s for r in records if r.active for s in r.cert_subjects}
        if taken.intersection(cert_subjects):
            raise ClientsFileError("that certificate subject already belongs to another client")
        records.append(
            ClientRecord(
                name=name,
                roles=(role,),
                token_sha256=token_digest(secret).hex() if secret else None,
                cert_subjects=cert_subjects,
            )
        )
    return secret


def revoke_client(path: Path, name: str) -> ClientRecord:
    with _locked(path) as records:
        for i, record in enumerate(records):
            if record.name == name:
                if not record.active:
                    raise ClientsFileError(f"client {name!r} is already revoked")
                records[i] = replace(record, revoked_at=_now())
                return records[i]
    raise ClientsFileError(f"no client named {name!r}")
