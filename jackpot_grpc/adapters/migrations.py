"""Alembic, driven from code: online upgrades and the offline (--sql) dry run."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from jackpot_grpc.config import PROJECT_ROOT

# Offline mode needs only a dialect (migrations/env.py), never a connection.
OFFLINE_URL = "offline"


def _config(database_url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(_config(database_url), revision)


def print_upgrade_sql(revision: str = "head") -> None:
    """Print the SQL an upgrade would run, touching no database."""
    command.upgrade(_config(OFFLINE_URL), revision, sql=True)
