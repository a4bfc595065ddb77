"""The clients file (JACKPOT_CLIENTS_FILE): who may call the service, and with which roles.

JSON, written atomically (a temporary file in the same directory, fsynced, renamed over
the old one) with mode 0600, so a running server never reads half a file:

    {"version": 1, "clients": [{"name": "slots-eu", "roles": ["game"],
      "token_sha256": "<hex>", "cert_subjects": ["slots-eu.example"],
      "created_at": "...", "revoked_at": null}]}

Optional per client, for the edge proxy (jackpot_grpc.edge): "edge_rate" (admitted calls a
second) and "edge_in_flight" (calls at once), positive integers overriding its role's limits.

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
import re
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jackpot_grpc.domain.roles import ROLES
from jackpot_grpc.security.secret_rules import MIN_TOKEN_LENGTH

FORMAT_VERSION = 1
TOKEN_PREFIX = "jpk_"  # recognisable in a leaked-secret scan
_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_SPACE = re.compile(r"[ \t\n\r]*")


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
    # The edge's per-client limits, when this client's differ from its role's.
    edge_rate: int | None = None
    edge_in_flight: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def name_of(raw: Any) -> str | None:
    name = raw.get("name") if isinstance(raw, dict) else None
    return name if isinstance(name, str) and name else None


def _text(raw: dict[str, Any], key: str, *, empty: bool) -> str | None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, str) or not (value or empty)):
        raise ClientsFileError(f"{key} must be a {'' if empty else 'non-empty '}string or null")
    return value


EDGE_LIMIT_MAX = 1_000_000
EDGE_LIMITS = ("edge_rate", "edge_in_flight")


def _edge_limit(raw: dict[str, Any], key: str) -> int | None:
    value = raw.get(key)
    # bool is an int in Python: `true` must not read as a limit of 1.
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= EDGE_LIMIT_MAX
    ):
        raise ClientsFileError(f"{key} must be an integer from 1 to {EDGE_LIMIT_MAX} or null")
    return value


def _record(raw: Any) -> ClientRecord:
    """One entry, checked as the server will use it: anything that would fail later
    (a digest that is not hex, a revocation that is not a timestamp) fails here."""
    if not isinstance(raw, dict) or name_of(raw) is None:
        raise ClientsFileError("each client needs a non-empty string 'name'")
    roles = raw.get("roles")
    if not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles):
        raise ClientsFileError(f"roles must be a list of some of {', '.join(ROLES)}")
    digest = raw.get("token_sha256")
    if digest is not None and (not isinstance(digest, str) or not _DIGEST.fullmatch(digest)):
        raise ClientsFileError("token_sha256 must be 64 hex digits (a SHA-256) or null")
    subjects = raw.get("cert_subjects")
    if subjects is None:
        subjects = []
    if not isinstance(subjects, list) or not all(isinstance(s, str) and s for s in subjects):
        raise ClientsFileError("cert_subjects must be a list of non-empty strings")
    return ClientRecord(
        name=raw["name"],
        roles=tuple(roles),
        token_sha256=digest.lower() if digest is not None else None,
        cert_subjects=tuple(subjects),
        created_at=_text(raw, "created_at", empty=True) or "",
        # Anything but null or a timestamp is refused: `false` or "" must not read as active.
        revoked_at=_text(raw, "revoked_at", empty=False),
        edge_rate=_edge_limit(raw, "edge_rate"),
        edge_in_flight=_edge_limit(raw, "edge_in_flight"),
    )


@dataclass(frozen=True)
class Entry:
    """One element of the "clients" list: a client, or why it admits nobody."""

    position: int  # 1-based, in the "clients" list
    line: int | None  # where it starts in the file, when known
    raw: Any  # as read: rewriting the file keeps an invalid entry as it was
    record: ClientRecord | None  # None: invalid, so disabled
    problem: str | None = None

    def __str__(self) -> str:
        where = f"entry {self.position}" + (f" (line {self.line})" if self.line else "")
        name = name_of(self.raw)
        return f"{where}{f', client {name!r}' if name else ''}: {self.problem or 'valid'}"


@dataclass(frozen=True)
class ClientsDocument:
    entries: tuple[Entry, ...] = ()

    @property
    def records(self) -> list[ClientRecord]:
        """The valid clients (revoked ones too)."""
        return [e.record for e in self.entries if e.record is not None]

    @property
    def invalid(self) -> list[Entry]:
        return [e for e in self.entries if e.record is None]


def _entry_offsets(text: str) -> list[int]:
    """Where each element of the top-level "clients" list starts, for error messages.
    The text is known to be valid JSON; the last "clients" key wins, as in json.loads."""
    decoder = json.JSONDecoder()

    def skip(i: int) -> int:
        return _SPACE.match(text, i).end()  # type: ignore[union-attr]  # always matches

    found: list[int] = []
    i = skip(0)
    if text[i : i + 1] != "{":
        return found
    i = skip(i + 1)
    while text[i : i + 1] == '"':
        key, i = decoder.raw_decode(text, i)
        i = skip(skip(i) + 1)  # the ':'
        if key == "clients" and text[i : i + 1] == "[":
            found = []
            i = skip(i + 1)
            while text[i : i + 1] not in ("]", ""):
                found.append(i)
                _, i = decoder.raw_decode(text, i)
                i = skip(i)
                if text[i : i + 1] == ",":
                    i = skip(i + 1)
            i += 1
        else:
            _, i = decoder.raw_decode(text, i)
        i = skip(i)
        if text[i : i + 1] == ",":
            i = skip(i + 1)
    return found


def _lines(text: str, count: int) -> list[int | None]:
    try:
        offsets = _entry_offsets(text)
    except (ValueError, IndexError):
        offsets = []
    if len(offsets) != count:
        return [None] * count
    return [text.count("\n", 0, offset) + 1 for offset in offsets]


def _conflicts(entries: list[Entry]) -> dict[int, str]:
    """Entries that contradict each other, by position: the file says two things about one
    name, token or certificate, so none of them is believed (a duplicate must never
    undo a revocation, whichever of the two comes first)."""
    claims: dict[tuple[str, str], list[int]] = {}
    for entry in entries:
        name = name_of(entry.raw)
        if name is not None:
            claims.setdefault(("client name", name), []).append(entry.position)
        record = entry.record
        if record is None or not record.active:
            continue
        if record.token_sha256 is not None:
            claims.setdefault(("token_sha256", record.token_sha256), []).append(entry.position)
        for subject in record.cert_subjects:
            claims.setdefault(("certificate subject", subject), []).append(entry.position)
    problems: dict[int, str] = {}
    for (kind, value), positions in claims.items():
        if len(positions) > 1:
            shown = value if kind != "token_sha256" else value[:8] + "…"
            listed = ", ".join(str(p) for p in positions)
            for position in positions:
                problems.setdefault(position, f"{kind} {shown!r} appears in entries {listed}")
    return problems


def parse(text: str, where: str) -> ClientsDocument:
    """Every entry of a clients file's text, each valid or not. Raises ClientsFileError
    only when the file as a whole cannot be read (not JSON, no "clients" list)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ClientsFileError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("clients"), list):
        raise ClientsFileError(f"{where}: expected an object with a 'clients' list")
    if data.get("version", FORMAT_VERSION) != FORMAT_VERSION:
        raise ClientsFileError(f"{where}: unsupported version {data['version']!r}")
    raws: list[Any] = data["clients"]
    entries: list[Entry] = []
    for position, (raw, line) in enumerate(zip(raws, _lines(text, len(raws)), strict=True), 1):
        try:
            entries.append(Entry(position, line, raw, _record(raw)))
        except ClientsFileError as exc:
            entries.append(Entry(position, line, raw, None, str(exc)))
    conflicts = _conflicts(entries)
    return ClientsDocument(
        tuple(
            replace(e, record=None, problem=conflicts[e.position]) if e.position in conflicts else e
            for e in entries
        )
    )


def read(path: Path) -> ClientsDocument:
    """The file's entries, valid or not; no file yet means no clients."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ClientsDocument()
    except (OSError, ValueError) as exc:
        raise ClientsFileError(f"{path}: {exc}") from None
    return parse(text, str(path))


def load(path: Path) -> list[ClientRecord]:
    """Every client in the file (revoked ones too), or ClientsFileError if any entry is
    invalid; the server itself uses `read`, which disables only the invalid ones."""
    document = read(path)
    if document.invalid:
        raise ClientsFileError(f"{path}: " + "; ".join(str(e) for e in document.invalid))
    return document.records


def _as_json(entry: Entry) -> Any:
    record = entry.record
    if record is None:
        return entry.raw
    body = {
        **record.__dict__,
        "roles": list(record.roles),
        "cert_subjects": list(record.cert_subjects),
    }
    # Unset edge limits are left out: a file without them reads and writes as before.
    return {k: v for k, v in body.items() if k not in EDGE_LIMITS or v is not None}


def render(entries: Iterable[Entry]) -> str:
    body = {"version": FORMAT_VERSION, "clients": [_as_json(e) for e in entries]}
    return json.dumps(body, indent=2) + "\n"


def _reads_back(text: str, entries: tuple[Entry, ...], where: str) -> None:
    """Refuse to write what the server would read differently: every entry meant to be
    valid must come back as the same client, and nothing else may turn invalid."""
    try:
        again = parse(text, where).entries
    except ClientsFileError as exc:
        raise ClientsFileError(f"refusing to write {where}: {exc}") from None
    meant = [e.record for e in entries]
    if [e.record for e in again] != meant:
        wrong = [str(e) for e, m in zip(again, meant, strict=False) if e.record != m]
        raise ClientsFileError(
            f"refusing to write {where}: it would not read back as meant: " + "; ".join(wrong)
        )


def save(path: Path, entries: Iterable[Entry | ClientRecord]) -> None:
    """Write atomically (mode 0600), after checking that the result reads back as meant."""
    listed = tuple(
        e if isinstance(e, Entry) else Entry(i, None, None, e) for i, e in enumerate(entries, 1)
    )
    text = render(listed)
    _reads_back(text, listed, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
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
def _locked(path: Path) -> Iterator[list[Entry]]:
    """Read-modify-write under an exclusive lock, so two `jackpot clients` never race.
    Invalid entries are kept as they are: fixing them is the operator's call."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        entries = list(read(path).entries)
        yield entries
        save(path, entries)
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
    if secret is not None and len(secret) < MIN_TOKEN_LENGTH:  # never, with new_token's
        raise ClientsFileError(f"a client token needs at least {MIN_TOKEN_LENGTH} characters")
    with _locked(path) as entries:
        if any(name_of(e.raw) == name or (e.record and e.record.name == name) for e in entries):
            raise ClientsFileError(f"client {name!r} already exists (revoked ones keep their name)")
        taken = {s for e in entries if e.record and e.record.active for s in e.record.cert_subjects}
        if taken.intersection(cert_subjects):
            raise ClientsFileError("that certificate subject already belongs to another client")
        record = ClientRecord(
            name=name,
            roles=(role,),
            token_sha256=token_digest(secret).hex() if secret else None,
            cert_subjects=cert_subjects,
        )
        entries.append(Entry(len(entries) + 1, None, None, record))
    return secret


def revoke_client(path: Path, name: str) -> ClientRecord:
    with _locked(path) as entries:
        for i, entry in enumerate(entries):
            record = entry.record
            if record is not None and record.name == name:
                if not record.active:
                    raise ClientsFileError(f"client {name!r} is already revoked")
                revoked = replace(record, revoked_at=_now())
                entries[i] = replace(entry, record=revoked)
                return revoked
            if record is None and name_of(entry.raw) == name:
                raise ClientsFileError(
                    f"client {name!r} cannot be revoked here: {entry} (an invalid entry admits"
                    " nobody already; fix or remove it by hand)"
                )
    raise ClientsFileError(f"no client named {name!r}")
