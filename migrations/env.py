"""Alembic environment: online against the database, offline (--sql) as a printed script."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool


def sqlalchemy_url() -> str:
    url: str | None = context.config.attributes.get("database_url") or os.environ.get(
        "DATABASE_URL"
    )
    if not url:
        raise SystemExit("no database: set DATABASE_URL or run `jackpot migrate`")
    # SQLAlchemy picks its driver from the scheme; ours is psycopg 3.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def run_offline() -> None:
    context.configure(
        url=sqlalchemy_url(), literal_binds=True, dialect_opts={"paramstyle": "named"}
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = create_engine(sqlalchemy_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
