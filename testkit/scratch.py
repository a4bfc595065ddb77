"""Throwaway databases on a server where we may CREATE DATABASE (tests and benchmarks;
not shipped in the wheel).

The server is the local system PostgreSQL (127.0.0.1:5432, user postgres), the embedded
one, or any libpq URL whose user may create databases.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from jackpot_grpc.adapters.embedded import EmbeddedPostgres

SYSTEM_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@contextlib.contextmanager
def admin_server(choice: str, embedded_dir: Path) -> Iterator[tuple[str, str]]:
    """(admin URL, "system" | "embedded" | "url") for a choice of "auto", "system",
    "embedded" or a URL; "auto" is the system server when it answers, else the embedded one
    (started under `embedded_dir`, stopped on exit)."""
    if choice == "embedded" or (choice == "auto" and not answers(SYSTEM_URL)):
        embedded = EmbeddedPostgres(embedded_dir)
        url = embedded.start()
        try:
            yield url, "embedded"
        finally:
            embedded.stop()
        return
    if choice in ("auto", "system"):
        yield SYSTEM_URL, "system"
    else:
        yield choice, "url"


def database_conninfo(admin: str, name: str) -> str:
    return make_conninfo(admin, dbname=name)


def create_database(admin: str, name: str, template: str | None = None) -> str:
    """CREATE DATABASE `name` (a trusted identifier); its connection string."""
    with psycopg.connect(admin, autocommit=True) as conn:
        clause = f" TEMPLATE {template}" if template else ""
        conn.execute(f"CREATE DATABASE {name}{clause}")
    return database_conninfo(admin, name)


def drop_database(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
