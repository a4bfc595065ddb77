"""DB_PGBOUNCER: the pool's connections never prepare statements behind a transaction pooler;
the batch connection takes generic plans, except there."""

from __future__ import annotations

import pytest

from jackpot_grpc.adapters.database import (
    batch_connection_kwargs,
    connection_kwargs,
    create_db_pool,
)
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


def test_the_batch_connection_takes_generic_plans_after_the_timeouts() -> None:
    settings = Settings.from_env({"DB_LOCK_TIMEOUT": "2", "DB_STATEMENT_TIMEOUT": "5"})
    options = batch_connection_kwargs(settings, URL + "?options=-c%20work_mem%3D8MB")["options"]
    assert options == (
        "-c work_mem=8MB -c lock_timeout=2000 -c statement_timeout=5000"
        " -c plan_cache_mode=force_generic_plan"
    )
    assert "plan_cache_mode" not in str(connection_kwargs(settings, URL).get("options"))


def test_behind_pgbouncer_the_batch_connection_sends_no_options() -> None:
    settings = Settings.from_env({"DB_PGBOUNCER": "1"})
    kwargs = batch_connection_kwargs(settings, URL)
    assert "options" not in kwargs
    assert kwargs["prepare_threshold"] is None


def test_a_bad_value_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="DB_PGBOUNCER must be on or off"):
        Settings.from_env({"DB_PGBOUNCER": "maybe"})
