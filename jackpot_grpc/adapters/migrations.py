"""Alembic, driven from code: online upgrades, the pending revisions, their SQL (dry run),
and the tables the schema at head holds.

The scripts live in migrations/ at the top of the repository and install inside the
package as jackpot_grpc.migrations (setup.py maps them in); the configuration is built
here rather than read from an alembic.ini, so a plain wheel install can migrate.
"""

from __future__ import annotations

import functools
import io
import logging
import re
from dataclasses import dataclass
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from jackpot_grpc.adapters import advisory_locks
from jackpot_grpc.adapters.database import connect_ops

# Offline mode needs only a dialect (migrations/env.py), never a connection.
OFFLINE_URL = "offline"
_CREATE_TABLE = re.compile(r"\bCREATE TABLE (?:IF NOT EXISTS )?(\w+)", re.IGNORECASE)
_DROP_TABLE = re.compile(r"\bDROP TABLE (?:IF EXISTS )?(\w+)", re.IGNORECASE)

# pg_advisory_xact_lock key held by every online upgrade or downgrade (migrations/env.py):
# concurrent `jackpot migrate` runs (several replicas, a Job retried) queue up on it, and
# each one after the first finds the schema already at head.
MIGRATION_LOCK_KEY = advisory_locks.MIGRATION


@dataclass(frozen=True)
class Revision:
    revision: str
    description: str


def script_location() -> str:
    return str(resources.files("jackpot_grpc.migrations"))


def alembic_config(database_url: str = OFFLINE_URL, output: io.StringIO | None = None) -> Config:
    config = Config(output_buffer=output)
    config.set_main_option("script_location", script_location())
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = database_url
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str | None:
    heads = _scripts().get_heads()
    return heads[0] if heads else None


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def current_revision(database_url: str, connect_timeout: int = 5) -> str | None:
    """The database's revision (None: never migrated); raises psycopg.OperationalError when
    the database cannot be reached."""
    with connect_ops(database_url, timeout=connect_timeout) as conn:
        present = conn.execute(
            "SELECT to_regclass('alembic_version') IS NOT NULL AS present"
        ).fetchone()
        if not present or not present["present"]:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row["version_num"])


def pending(current: str | None, target: str = "head") -> list[Revision]:
    """The revisions an upgrade from `current` to `target` would apply, oldest first."""
    found = _scripts().iterate_revisions(target, current or "base")
    return [Revision(s.revision, first_doc_line(s.doc)) for s in reversed(list(found))]


@dataclass(frozen=True)
class Plan:
    """What moving from one revision to another runs: `up` or `down` (or `none`), and the
    revisions in the order they run (newest first when going down)."""

    direction: str
    target: str | None
    revisions: list[Revision]


def resolve(revision: str) -> str | None:
    """A revision id (or "head"/"base") as an id; None for base. Raises ValueError for a
    revision the migrations do not know."""
    if revision == "base":
        return None
    try:
        found = _scripts().get_revision(revision)
    except Exception as exc:  # alembic's lookup errors differ by version
        raise ValueError(f"unknown revision {revision!r}") from exc
    if found is None:
        raise ValueError(f"unknown revision {revision!r}")
    return str(found.revision)


def plan(current: str | None, target: str = "head") -> Plan:
    """The way from `current` to `target`: up (pending revisions) or down (each undone
    revision's downgrade(), newest first)."""
    wanted = resolve(target)
    if wanted == current:
        return Plan("none", wanted, [])
    if current is not None:
        below = [s.revision for s in _scripts().iterate_revisions(current, "base")]
        if wanted is None or wanted in below:
            undone = _scripts().iterate_revisions(current, wanted or "base")
            steps = [Revision(s.revision, first_doc_line(s.doc)) for s in undone]
            return Plan("down", wanted, [r for r in steps if r.revision != wanted])
    return Plan("up", wanted, pending(current, wanted or "base"))


def below(revision: str) -> str | None:
    """The revision `revision` revises (None: it is the first)."""
    down = _scripts().get_revision(revision).down_revision
    return None if down is None else str(down)


def downgrade_sql(current: str, target: str | None) -> str:
    """The SQL a downgrade from `current` to `target` (None: base) would run, offline."""
    output = io.StringIO()
    command.downgrade(
        alembic_config(OFFLINE_URL, output), f"{current}:{target or 'base'}", sql=True
    )
    return output.getvalue()


def first_doc_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""


def upgrade_sql(current: str | None, target: str = "head") -> str:
    """The SQL an upgrade from `current` would run, touching no database."""
    output = io.StringIO()
    span = f"{current}:{target}" if current else target
    # Offline, alembic still logs "Running upgrade ..." per revision: after `backup create`
    # (which reads the schema's tables this way) that reads as if it had migrated.
    narrator = logging.getLogger("alembic.runtime.migration")
    level = narrator.level
    narrator.setLevel(logging.WARNING)
    try:
        command.upgrade(alembic_config(OFFLINE_URL, output), span, sql=True)
    finally:
        narrator.setLevel(level)
    return output.getvalue()


def known_revision(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is not None
    except Exception:  # alembic's lookup errors differ by version; unknown is unknown
        return False


@functools.cache
def schema_tables(revision: str | None = "head") -> tuple[str, ...]:
    """Every table the schema at `revision` holds (None: an unmigrated database, none),
    read from the migrations' own SQL (so a new migration's table is in every backup check
    without a list to keep up to date)."""
    if revision is None:
        return ()
    tables: list[str] = []
    for statement in upgrade_sql(None, revision).split(";"):
        for created in _CREATE_TABLE.findall(statement):
            if created not in tables:
                tables.append(created)
        for dropped in _DROP_TABLE.findall(statement):
            if dropped in tables:
                tables.remove(dropped)
    return tuple(tables)
