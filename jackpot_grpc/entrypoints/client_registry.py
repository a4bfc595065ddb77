"""The server's view of its clients: the clients file plus JACKPOT_ADMIN_TOKEN, kept fresh.

A change to the file is picked up on SIGHUP (`reload`) and, without one, by `refresh`,
which looks at the file's mtime, size and inode at most every `poll_seconds`; a revoked
token stops working then.

The file is applied entry by entry: an invalid entry (clients_file.parse says why) admits
nobody, is logged at ERROR with its position and line, counted
(`jackpot_clients_file_problems_total{problem="invalid_entry"}`) and listed in /health,
while every valid entry, revocations included, applies at once. A file that cannot be
applied at all (not JSON, unreadable, others may read or write it) keeps the last good
set, is logged at ERROR and counted (`problem="not_applied"`), and is tried again at every
check until it applies: its stamp is recorded only once its clients are in use. At start
such a file stops the server. Nothing here raises into a call: a failure to look up
a caller refuses that caller.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from jackpot_grpc.adapters import clients_file
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.entrypoints.identity import Client
from jackpot_grpc.security.client_names import ADMIN_CLIENT as ADMIN_CLIENT
from jackpot_grpc.security.secret_rules import loose_mode

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
PROBLEMS = ("invalid_entry", "not_applied")


@dataclass(frozen=True)
class Credentials:
    tokens: tuple[tuple[bytes, Client], ...]  # (SHA-256 of the token, its client)
    certificates: dict[str, Client]  # certificate subject (CN or SAN) -> client


def credentials_of(
    records: Iterable[clients_file.ClientRecord], admin_token: str | None
) -> Credentials:
    tokens: list[tuple[bytes, Client]] = []
    certificates: dict[str, Client] = {}
    for record in records:
        if not record.active:
            continue
        client = Client(record.name, frozenset(record.roles))
        if record.token_sha256 is not None:
            tokens.append((bytes.fromhex(record.token_sha256), client))
        for subject in record.cert_subjects:
            certificates[subject] = client
    if admin_token is not None:
        tokens.append(
            (clients_file.token_digest(admin_token), Client(ADMIN_CLIENT, frozenset({"admin"})))
        )
    return Credentials(tuple(tokens), certificates)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()


class ClientRegistry:
    def __init__(
        self,
        path: Path | None,
        admin_token: str | None,
        *,
        poll_seconds: float = POLL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._admin_token = admin_token
        self._poll_seconds = poll_seconds
        self._clock = clock
        self._checked_at = clock()
        self._stamp: tuple[int, int, int] | None = None
        self._credentials = credentials_of((), admin_token)
        self._invalid: list[clients_file.Entry] = []
        self._not_applied: str | None = None  # why the file's current version is not in use
        self._applied_at: float | None = None
        self._active = 0
        self.prometheus = CollectorRegistry()  # exported on the health port
        self._problems = Counter(
            "jackpot_clients_file_problems",
            "Clients file problems: invalid entries (disabled) and versions not applied.",
            ("problem",),
            registry=self.prometheus,
        )
        for kind in PROBLEMS:
            self._problems.labels(kind)
        self._invalid_now = Gauge(
            "jackpot_clients_file_invalid_entries",
            "Entries of the clients file in use that are invalid, so admit nobody.",
            registry=self.prometheus,
        )
        if path is not None:
            failed = self._apply()
            if failed is not None:  # no good set to keep yet: do not start blind
                raise ConfigError(f"JACKPOT_CLIENTS_FILE cannot be used: {failed}")

    @property
    def open(self) -> bool:
        """No clients configured at all: every caller is let in."""
        return self._path is None and self._admin_token is None

    def _apply(self) -> str | None:
        """Read the file and put its valid clients in use; why not, if it could not be."""
        assert self._path is not None
        stamp = _stamp(self._path)  # before reading: a change meanwhile is seen next time
        try:
            problem = loose_mode(self._path, "the clients file")
            if problem is None:
                document = clients_file.read(self._path)
                credentials = credentials_of(document.records, self._admin_token)
        except clients_file.ClientsFileError as exc:
            problem = str(exc)
        except Exception as exc:  # a bug must not open, close or crash the service
            log.exception("clients file %s could not be applied", self._path)
            problem = f"{self._path}: {type(exc).__name__}: {exc}"
        if problem is not None:
            if problem != self._not_applied:  # once per distinct failure, not every check
                log.error("clients file NOT applied, keeping the previous clients: %s", problem)
                self._problems.labels("not_applied").inc()
            self._not_applied = problem
            return problem
        self._credentials = credentials
        self._stamp = stamp  # only now: a version that failed is read again next check
        self._not_applied = None
        self._applied_at = time.time()
        self._invalid = document.invalid
        self._invalid_now.set(len(self._invalid))
        for entry in self._invalid:
            log.error("clients file %s: %s; this entry admits nobody", self._path, entry)
            self._problems.labels("invalid_entry").inc()
        if stamp is None:
            log.warning(
                "clients file %s does not exist yet: only JACKPOT_ADMIN_TOKEN works", self._path
            )
        records = document.records
        self._active = sum(1 for r in records if r.active)
        log.info(
            "clients loaded from %s: %d active, %d revoked, %d invalid",
            self._path,
            sum(1 for r in records if r.active),
            sum(1 for r in records if not r.active),
            len(self._invalid),
        )
        return None

    def reload(self) -> None:
        """Read the file now (SIGHUP); keep the last good set if it cannot be applied."""
        self._checked_at = self._clock()
        if self._path is None:
            return
        try:
            self._apply()
        except Exception:  # a signal handler: never raise into the loop
            log.exception("clients file reload failed")

    def refresh(self) -> None:
        """Reload if the file changed, or its last version failed; looks at most every
        poll_seconds."""
        try:
            if self._path is None or self._clock() - self._checked_at < self._poll_seconds:
                return
            self._checked_at = self._clock()
            if self._not_applied is not None or _stamp(self._path) != self._stamp:
                self._apply()
        except Exception:
            log.exception("clients file check failed; the previous clients stay")

    def by_token(self, token: str) -> Client | None:
        try:
            digest = clients_file.token_digest(token)
        except Exception:  # e.g. not encodable: no client has it
            return None
        found: Client | None = None
        # Every stored digest is compared, in constant time, whatever matches first.
        for stored, client in self._credentials.tokens:
            if hmac.compare_digest(stored, digest):
                found = client
        return found

    def by_certificate(self, subjects: Iterable[str]) -> Client | None:
        for subject in subjects:
            client = self._credentials.certificates.get(subject)
            if client is not None:
                return client
        return None

    def health(self) -> dict[str, Any]:
        """The clients file's state for /health: in use, with which problems."""
        if self._path is None:
            return {"status": "ok", "file": None, "invalid_entries": [], "error": None}
        status = (
            "not_applied" if self._not_applied else "invalid_entries" if self._invalid else "ok"
        )
        return {
            "status": status,
            "file": str(self._path),
            "applied_at": _iso(self._applied_at),
            "active_clients": self._active,
            "invalid_entries": [
                {
                    "entry": e.position,
                    "line": e.line,
                    "client": clients_file.name_of(e.raw),
                    "problem": e.problem,
                }
                for e in self._invalid
            ],
            "error": self._not_applied,
        }
