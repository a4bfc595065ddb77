"""Alembic environment: online against the database, offline (--sql) as a printed script."""

from __future__ import annotations

import os

import psycopg
from alembic import context
from sqlalchemy import create_engine, pool


def database_url() -> str:
    """Any libpq connection string (URL or key=value), as psycopg takes it."""
    url: str | None = context.config.attributes.get("database_url") or os.environ.get(
        "DATABASE_URL"
    )
    if not url:
        raise SystemExit("no database: set DATABASE_URL or run `jackpot migrate`")
    return url


def run_offline() -> None:
    # Offline mode only needs the dialect to print SQL.
    context.configure(
        url="postgresql+psycopg://", literal_binds=True, dialect_opts={"paramstyle": "named"}
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    # psycopg connects, so unix sockets and key=value strings work as they do everywhere else.
    conninfo = database_url()
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(conninfo),
        poolclass=pool.NullPool,
    )
    with engine.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
