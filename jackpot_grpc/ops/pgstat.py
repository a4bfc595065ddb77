"""The schema revision the code expects (alembic's head), next to the runbook's queries.

The queries themselves live in jackpot_grpc.adapters.pgstat; they are re-exported here for
the operator CLI and its tests, which read them as `pgstat.<name>`.
"""

from __future__ import annotations

import logging

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
from jackpot_grpc.config import PROJECT_ROOT


def head_revision() -> str | None:
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # chatty at import
    from alembic.config import Config  # imported here: slow, and only needed here
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(Config(str(PROJECT_ROOT / "alembic.ini")))
    heads = script.get_heads()
    return heads[0] if heads else None


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
    "server_info",
    "server_major",
    "statements",
    "table_stats",
    "terminate",
]
