"""The contribution write statements stay within what psycopg caches: past
MAX_CACHED_STATEMENT_LENGTH characters it parses a statement's placeholders again on
every execute (about 80 µs a batch), and every group-commit batch sends one."""

from __future__ import annotations

import pytest
from psycopg import _queries

from jackpot_grpc.adapters import contribution_store


@pytest.mark.parametrize("name", ["GUARDED_RECORD", "RECORD_CONTRIBUTIONS"])
def test_write_statement_is_short_enough_for_psycopgs_cache(name: str) -> None:
    statement: str = getattr(contribution_store, name)
    assert len(statement.encode()) <= _queries.MAX_CACHED_STATEMENT_LENGTH
    assert "--" not in statement and "  " not in statement and "\n" not in statement
