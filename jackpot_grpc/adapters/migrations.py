"""Alembic, driven from code: online upgrades, the pending revisions, their SQL (dry run),
and the tables the schema at head holds."""

from __future__ import annotations

import functools
import io
import logging
import re
from dataclasses import dataclass

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from jackpot_grpc.config import PROJECT_ROOT

# Offline mode needs only a dialect (migrations/env.py), never a connection.
OFFLINE_URL = "offline"
_CREATE_TABLE = re.compile(r"\bCREATE TABLE (?:IF NOT EXISTS )?(\w+)", re.IGNORECASE)
_DROP_TABLE = re.compile(r"\bDROP TABLE (?:IF EXISTS )?(\w+)", re.IGNORECASE)


@dataclass(frozen=True)
class Revision:
    revision: str
    description: str


def _config(database_url: str, output: io.StringIO | None = None) -> Config:
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # chatty at import
    config = Config(str(PROJECT_ROOT / "alembic.ini"), output_buffer=output)
    config.attributes["database_url"] = database_url
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config(OFFLINE_URL))


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(_config(database_url), revision)


def current_revision(database_url: str, connect_timeout: int = 5) -> str | None:
    """The database's revision (None: never migrated); raises psycopg.OperationalError when
    the database cannot be reached."""
    with psycopg.connect(database_url, connect_timeout=connect_timeout) as conn:
        present = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
        if not present or not present[0]:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


def pending(current: str | None, target: str = "head") -> list[Revision]:
    """The revisions an upgrade from `current` to `target` would apply, oldest first."""
    found = _scripts().iterate_revisions(target, current or "base")
    return [Revision(s.revision, first_doc_line(s.doc)) for s in reversed(list(found))]


def first_doc_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""


def upgrade_sql(current: str | None, target: str = "head") -> str:
    """The SQL an upgrade from `current` would run, touching no database."""
    output = io.StringIO()
    span = f"{current}:{target}" if current else target
    command.upgrade(_config(OFFLINE_URL, output), span, sql=True)
    return output.getvalue()


@functools.cache
def schema_tables() -> tuple[str, ...]:
    """Every table the schema at head holds, read from the migrations' own SQL (so a new
    migration's table is in every backup check without a list to keep up to date)."""
    tables: list[str] = []
    for statement in upgrade_sql(None).split(";"):
        for created in _CREATE_TABLE.findall(statement):
            if created not in tables:
                tables.append(created)
        for dropped in _DROP_TABLE.findall(statement):
            if dropped in tables:
                tables.remove(dropped)
    return tuple(tables)
