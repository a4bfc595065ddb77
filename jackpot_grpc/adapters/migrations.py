"""Alembic, driven from code: online upgrades and the offline (--sql) dry run.

The scripts ship inside the package (jackpot_grpc/migrations), and the configuration is
built here rather than read from an alembic.ini, so a plain wheel install can migrate.
"""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from jackpot_grpc.adapters import advisory_locks

# Offline mode needs only a dialect (migrations/env.py), never a connection.
OFFLINE_URL = "offline"

# pg_advisory_xact_lock key held by every online upgrade or downgrade (migrations/env.py):
# concurrent `jackpot migrate` runs (several replicas, a Job retried) queue up on it, and
# each one after the first finds the schema already at head.
MIGRATION_LOCK_KEY = advisory_locks.MIGRATION


def script_location() -> str:
    return str(resources.files("jackpot_grpc") / "migrations")


def alembic_config(database_url: str = OFFLINE_URL) -> Config:
    config = Config()
    config.set_main_option("script_location", script_location())
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = database_url
    return config


def head_revision() -> str | None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    return heads[0] if heads else None


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def print_upgrade_sql(revision: str = "head") -> None:
    """Print the SQL an upgrade would run, touching no database."""
    command.upgrade(alembic_config(OFFLINE_URL), revision, sql=True)
