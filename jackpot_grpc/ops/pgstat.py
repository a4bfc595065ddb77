"""The schema revision the code expects (alembic's head), next to the runbook's queries.

The queries themselves live in jackpot_grpc.adapters.pgstat; they are re-exported here for
the operator CLI and its tests, which read them as `pgstat.<name>`.
"""

from __future__ import annotations

from jackpot_grpc.adapters.ops_connection import one, rows
from jackpot_grpc.adapters.pgstat import (
    JACKPOT_APPLICATIONS,
    MEMORY_SETTINGS,
    STATEMENT_PATTERN,
    TABLES,
    StatementStats,
    blocked,
    connection_usage,
    connections_by_state,
    current_revision,
    existing_tables,
    index_usage,
    ledger_counts,
    locks,
    long_running,
    maintain,
    memory_settings,
    monthly_growth,
    resource_trends,
    server_info,
    server_major,
    statements,
    table_stats,
    terminate,
)


def schema_tables() -> tuple[str, ...]:
    """Every table of the schema at head (read from the migrations)."""
    from jackpot_grpc.adapters import migrations  # imported here: alembic is slow to import

    return migrations.schema_tables()


def head_revision() -> str | None:
    from jackpot_grpc.adapters import migrations  # imported here: alembic is slow to import

    return migrations.head_revision()


__all__ = [
    "JACKPOT_APPLICATIONS",
    "MEMORY_SETTINGS",
    "STATEMENT_PATTERN",
    "TABLES",
    "StatementStats",
    "blocked",
    "connection_usage",
    "connections_by_state",
    "current_revision",
    "existing_tables",
    "head_revision",
    "index_usage",
    "ledger_counts",
    "locks",
    "long_running",
    "maintain",
    "memory_settings",
    "monthly_growth",
    "one",
    "resource_trends",
    "rows",
    "schema_tables",
    "server_info",
    "server_major",
    "statements",
    "table_stats",
    "terminate",
]
