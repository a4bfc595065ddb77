"""DB_PGBOUNCER: the pool's connections never prepare statements behind a transaction pooler."""

from __future__ import annotations

import pytest

from jackpot_grpc.adapters.database import connection_kwargs, create_db_pool
from jackpot_grpc.config import Settings
from jackpot_grpc.config_error import ConfigError

URL = "postgresql://jackpot@127.0.0.1/jackpot"


def test_pgbouncer_mode_turns_prepared_statements_off() -> None:
    settings = Settings.from_env({"DB_PGBOUNCER": "1"})
    assert settings.database.pgbouncer
    assert connection_kwargs(settings, URL)["prepare_threshold"] is None
    pool = create_db_pool(settings, "postgresql://127.0.0.1/none")  # created closed: no I/O
    assert isinstance(pool.kwargs, dict)  # given as a dict, not a callable giving one
    assert pool.kwargs["prepare_threshold"] is None


def test_direct_connections_keep_psycopg_prepared_statements() -> None:
    settings = Settings.from_env({})
    assert not settings.database.pgbouncer
    assert "prepare_threshold" not in connection_kwargs(settings, URL)


def test_a_bad_value_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="DB_PGBOUNCER must be on or off"):
        Settings.from_env({"DB_PGBOUNCER": "maybe"})
