"""Alembic environment: online against the database, offline (--sql) as a printed script."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool, text

from jackpot_grpc.adapters.database import connect_migration
from jackpot_grpc.adapters.migrations import MIGRATION_LOCK_KEY


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
        creator=lambda: connect_migration(conninfo),
        poolclass=pool.NullPool,
    )
    with engine.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            # One migration at a time: a concurrent run waits here, then reads the version
            # table the first one committed and has nothing left to do. A transaction-level
            # lock, so it is released at commit (and works through PgBouncer's transaction mode).
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
