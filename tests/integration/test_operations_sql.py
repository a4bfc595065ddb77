"""Every SQL block of docs/OPERATIONS.md runs verbatim on a migrated database (issue 16,
item 6): the runbook's queries, translated for PostgreSQL 13+ and this schema."""

from __future__ import annotations

import re

import psycopg
import pytest

from testkit.paths import PROJECT_ROOT
from testkit.tools import require

OPERATIONS = PROJECT_ROOT / "docs" / "OPERATIONS.md"
BLOCK = re.compile(r"^```sql\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Statements end with ";" at the end of a line (none of these has one inside a literal).
STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)


def sql_blocks() -> list[str]:
    return BLOCK.findall(OPERATIONS.read_text())


def statements(block: str) -> list[str]:
    return [s.strip() for s in STATEMENT_END.split(block) if s.strip()]


def test_operations_translates_every_sql_block_of_the_runbook() -> None:
    # The runbook's psql/sql blocks (less CREATE DATABASE, a shell template) have one each.
    assert len(sql_blocks()) >= 24


def _statements_loaded(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[bool, str]:
    """(whether pg_stat_statements can be read here, why not)."""
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT count(*) FROM pg_stat_statements")
    except psycopg.Error as exc:
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()
        return False, (
            f"pg_stat_statements cannot be read on this server (shared_preload_libraries ="
            f" {preload[0] if preload else ''!r}): {exc.diag.message_primary or exc}"
        )
    return True, ""


def block_params() -> list[object]:
    """Every block; those reading pg_stat_statements need a server that preloads it: the
    system PostgreSQL in CI (.ci/run), not the embedded one (its wheel lacks the module)."""
    return [
        pytest.param(
            block,
            id=block.split()[0] + ":" + block[:40],
            marks=[pytest.mark.system_postgres] if "pg_stat_statements" in block else [],
        )
        for block in sql_blocks()
    ]


@pytest.mark.parametrize("block", block_params())
def test_sql_block_runs_verbatim(block: str, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO system_metrics (stat_timestamp, host, pid, cpu_usage, memory_usage,"
            " rss_bytes, connection_count, pool_waiting, pool_max)"
            " VALUES (now(), 'h', 1, 5, 10, 1000, 2, 0, 10)"
        )
        if "pg_stat_statements" in block:
            require(*_statements_loaded(conn))
        for statement in statements(block):
            conn.execute(statement)  # verbatim: psycopg sends it as written
        pools = conn.execute("SELECT sum(current_amount) FROM jackpots").fetchone()
    assert pools == (1_110_000,)  # the rolled-back update left the pools as they were
