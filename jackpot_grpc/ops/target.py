"""Which database an operator command works on, and connections to it.

DATABASE_URL, or — only when JACKPOT_EMBEDDED_DB asks for it — the embedded PostgreSQL under
JACKPOT_DATA_DIR. An embedded server that was already running (say, under `jackpot run`) is
adopted and left running; one started here is stopped on exit.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from jackpot_grpc.adapters.embedded import EmbeddedPostgres
from jackpot_grpc.config import Settings

# Contains "jackpot", as the runbook's `application_name LIKE '%jackpot%'` expects; the
# queries below leave out their own connection.
APPLICATION_NAME = "jackpot-ops"

Conn = psycopg.Connection[dict[str, Any]]


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


@contextlib.contextmanager
def open_database(settings: Settings) -> Iterator[DatabaseTarget]:
    if settings.database_url:
        yield DatabaseTarget(settings.database_url)
        return
    if not settings.embedded_db:
        raise SystemExit(NO_DATABASE)
    embedded = EmbeddedPostgres(settings.data_dir)
    url = embedded.start()
    try:
        yield DatabaseTarget(url, embedded.bin_dir)
    finally:
        embedded.stop()  # a no-op for a server that was already running


def connect(url: str, *, dbname: str | None = None, timeout: float = 5.0) -> Conn:
    """An autocommit connection (each statement its own transaction) with dict rows."""
    conninfo = make_conninfo(url, dbname=dbname) if dbname else url
    return psycopg.connect(
        conninfo,
        autocommit=True,
        connect_timeout=max(1, round(timeout)),
        application_name=APPLICATION_NAME,
        row_factory=dict_row,
    )


def rows(
    conn: Conn, query: Any, params: Sequence[Any] | dict[str, Any] = ()
) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def one(conn: Conn, query: Any, params: Sequence[Any] | dict[str, Any] = ()) -> dict[str, Any]:
    found = rows(conn, query, params)
    if not found:
        raise LookupError("query returned no row")
    return found[0]


def timed_ping(conn: Conn, samples: int = 3) -> float:
    """The best of a few `SELECT 1` round trips, in milliseconds."""
    best = float("inf")
    for _ in range(samples):
        started = time.perf_counter()
        conn.execute("SELECT 1")
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def split_password(url: str) -> tuple[str, str | None]:
    """The conninfo without its password (for command lines, which others can read)."""
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    return make_conninfo("", **params), None if password is None else str(password)


def with_dbname(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


def dbname_of(url: str) -> str | None:
    name = conninfo_to_dict(url).get("dbname")
    return None if name is None else str(name)
