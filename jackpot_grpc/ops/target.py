"""Which database a command works on.

Operator commands: DATABASE_URL, nothing else — never a throwaway embedded server, which
would back up, audit or migrate an empty database and call it a success. The service
processes (`jackpot run`, `jackpot serve`): DATABASE_URL, or — only when JACKPOT_EMBEDDED_DB
asks for it — the embedded PostgreSQL under JACKPOT_DATA_DIR. An embedded server that was
already running is adopted and left running; one started here is stopped on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jackpot_grpc.adapters.embedded import EmbeddedPostgres
from jackpot_grpc.adapters.ops_connection import (
    dbname_of,
    one,
    rows,
    split_password,
    timed_ping,
    with_dbname,
)
from jackpot_grpc.config import Settings
from jackpot_grpc.config_error import ConfigError


@dataclass(frozen=True)
class DatabaseTarget:
    url: str
    # Client tools shipped with the embedded server (None: an external server).
    bin_dir: Path | None = None


# Without a DATABASE_URL a service would otherwise keep its money ledger in a throwaway
# directory: that must be asked for, never fallen into.
NO_DATABASE = (
    "DATABASE_URL is not set: point it at PostgreSQL, or set JACKPOT_EMBEDDED_DB=1 for a"
    " throwaway embedded server (development only)"
)
OPS_NO_DATABASE = (
    "DATABASE_URL is not set: operator commands work only on the database it names, never on"
    " a throwaway embedded one (JACKPOT_EMBEDDED_DB is for `jackpot run`/`serve`; the URL of"
    " a running embedded server is in their log)"
)


@contextlib.contextmanager
def open_database(settings: Settings, *, service: bool = False) -> Iterator[DatabaseTarget]:
    """The database of DATABASE_URL; for a service process (`service`) that asked for it
    with JACKPOT_EMBEDDED_DB, the embedded one."""
    if settings.database.url:
        yield DatabaseTarget(settings.database.url)
        return
    if not service:
        raise ConfigError(OPS_NO_DATABASE)
    if not settings.database.embedded:
        raise ConfigError(NO_DATABASE)
    embedded = EmbeddedPostgres(settings.database.data_dir)
    url = embedded.start()
    try:
        yield DatabaseTarget(url, embedded.bin_dir)
    finally:
        embedded.stop()  # a no-op for a server that was already running


# The connection helpers live in adapters.ops_connection; re-exported for the operator
# CLI, which imports them from here.
__all__ = [
    "DatabaseTarget",
    "dbname_of",
    "one",
    "open_database",
    "rows",
    "split_password",
    "timed_ping",
    "with_dbname",
]
