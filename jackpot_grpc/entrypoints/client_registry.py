"""The server's view of its clients: the clients file plus JACKPOT_ADMIN_TOKEN, kept fresh.

A change to the file is picked up on SIGHUP (`reload`) and, without one, by `refresh`,
which looks at the file's mtime, size and inode at most every `poll_seconds`; a revoked
token stops working then. A file that turns unreadable or invalid keeps the last good
set (and says so in the log): a bad edit must neither open the service nor lock every
client out.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from jackpot_grpc.adapters import clients_file
from jackpot_grpc.entrypoints.identity import Client

log = logging.getLogger(__name__)

ADMIN_CLIENT = "admin"  # the client JACKPOT_ADMIN_TOKEN stands for
POLL_SECONDS = 2.0


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
        self.reload()

    @property
    def open(self) -> bool:
        """No clients configured at all: every caller is let in."""
        return self._path is None and self._admin_token is None

    def reload(self) -> None:
        """Read the file now (SIGHUP, start); keep the last good set if it is bad."""
        self._checked_at = self._clock()
        if self._path is None:
            return
        stamp = _stamp(self._path)
        try:
            records = clients_file.load(self._path)
        except clients_file.ClientsFileError as exc:
            log.error("clients file not reloaded, keeping the previous clients: %s", exc)
            self._stamp = stamp
            return
        if stamp is None:
            log.warning(
                "clients file %s does not exist yet: only JACKPOT_ADMIN_TOKEN works", self._path
            )
        self._stamp = stamp
        self._credentials = credentials_of(records, self._admin_token)
        log.info(
            "clients loaded from %s: %d active",
            self._path,
            sum(1 for r in records if r.active),
        )

    def refresh(self) -> None:
        """Reload if the file changed; looks at it at most every poll_seconds."""
        if self._path is None or self._clock() - self._checked_at < self._poll_seconds:
            return
        self._checked_at = self._clock()
        if _stamp(self._path) != self._stamp:
            self.reload()

    def by_token(self, token: str) -> Client | None:
        digest = clients_file.token_digest(token)
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
