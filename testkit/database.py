"""Scratch databases: uniquely named, so several test runs can share one PostgreSQL."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg

from testkit.scratch import create_database, drop_database

__all__ = ["create_database", "drop_database", "public_tables", "scratch_database", "unique_name"]


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str, template: str | None = None) -> Iterator[str]:
    """A new database named `<prefix>_<random>` (a copy of `template` if given), dropped on
    exit; yields its URL."""
    name = unique_name(prefix)
    url = create_database(admin_url, name, template=template)
    try:
        yield url
    finally:
        drop_database(admin_url, name)


def public_tables(url: str) -> set[str]:
    """The tables in a database's public schema (what migrations create and drop)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {r[0] for r in rows}
