"""A multi-host DATABASE_URL: libpq tries each host in turn, and `connect_timeout` applies
per host, so a primary that takes connections but never answers (a hung or partitioned
node) costs every new connection DB_CONNECT_TIMEOUT before the next host is tried."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jackpot_grpc.adapters import ledger_store
from jackpot_grpc.adapters.database import connection_kwargs, ledger_conninfo
from jackpot_grpc.config import Settings
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.entrypoints.server import start_server


def _two_hosts(database_url: str, silent_port: int, **extra: str) -> str:
    real = conninfo_to_dict(database_url)
    return make_conninfo(
        database_url,
        host=f"127.0.0.1,{real.get('host', '127.0.0.1')}",
        port=f"{silent_port},{real.get('port', 5432)}",
        target_session_attrs="read-write",
        **extra,
    )


def _connect_seconds(url: str, settings: Settings) -> float:
    started = time.monotonic()
    with psycopg.connect(url, **connection_kwargs(settings, url)) as conn:
        assert conn.execute("SELECT NOT pg_is_in_recovery()").fetchone() == (True,)
    return time.monotonic() - started


def test_connect_timeout_applies_per_host(
    settings: Settings, database_url: str, silent_port: int
) -> None:
    url = _two_hosts(database_url, silent_port)
    two = dataclasses.replace(
        settings, database=dataclasses.replace(settings.database, connect_timeout=2.0)
    )
    assert connection_kwargs(two, url)["connect_timeout"] == 2
    took = _connect_seconds(url, two)
    assert 1.8 <= took < 4.0, took  # the silent host's 2 s, then the real one


def test_a_connect_timeout_in_the_url_wins(
    settings: Settings, database_url: str, silent_port: int
) -> None:
    url = _two_hosts(database_url, silent_port, connect_timeout="1")
    slow = dataclasses.replace(
        settings, database=dataclasses.replace(settings.database, connect_timeout=10.0)
    )
    assert "connect_timeout" not in connection_kwargs(slow, url)
    took = _connect_seconds(url, slow)
    assert 0.8 <= took < 3.0, took


def test_db_connect_timeout_is_read_from_the_environment() -> None:
    assert Settings.from_env({}).database.connect_timeout == 2.0
    assert Settings.from_env({"DB_CONNECT_TIMEOUT": "5"}).database.connect_timeout == 5.0
    assert Settings.from_env({"JACKPOT_COMMIT_TIMEOUT": "0.5"}).database.commit_timeout == 0.5
    assert Settings.from_env({"JACKPOT_BATCH_AGE_LIMIT": "7"}).batch.age_limit == 7.0


def test_the_batch_age_limit_is_never_below_the_commit_timeout() -> None:
    """A batch may legitimately wait for its COMMIT up to JACKPOT_COMMIT_TIMEOUT: an age
    limit below it turned readiness NOT_SERVING for slow commits that then succeeded
    (flapping). The defaults agree, and a contradiction is refused at start."""
    defaults = Settings.from_env({})
    assert defaults.batch.age_limit >= defaults.database.commit_timeout > 0
    with pytest.raises(ConfigError, match="JACKPOT_BATCH_AGE_LIMIT"):
        Settings.from_env({"JACKPOT_COMMIT_TIMEOUT": "5", "JACKPOT_BATCH_AGE_LIMIT": "3"})
    # Either bound off (0): nothing to contradict.
    assert Settings.from_env({"JACKPOT_COMMIT_TIMEOUT": "0", "JACKPOT_BATCH_AGE_LIMIT": "1"})
    assert Settings.from_env({"JACKPOT_BATCH_AGE_LIMIT": "0"}).batch.age_limit == 0


async def test_the_ledger_signer_and_audit_move_past_a_silent_host(
    settings: Settings, database_url: str, silent_port: int, ledger_key: Path, tmp_path: Path
) -> None:
    """The checkpoint worker and the failover watch open their own synchronous connections:
    they carry DB_CONNECT_TIMEOUT like the pools do, so the silent first host costs them
    that long, not for ever. The operator commands' ledger connections (a URL without a
    connect_timeout) give up on it after ledger_store.CONNECT_TIMEOUT."""
    url = _two_hosts(database_url, silent_port)
    tuned = dataclasses.replace(
        settings,
        database=dataclasses.replace(settings.database, connect_timeout=1.0, pool_min_size=1),
        ledger=dataclasses.replace(
            settings.ledger,
            key_file=ledger_key,
            checkpoint_log=tmp_path / "checkpoints",
            checkpoint_interval=0.2,
        ),
    )
    ledger = conninfo_to_dict(ledger_conninfo(tuned, url))
    assert (ledger["connect_timeout"], ledger["application_name"]) == ("1", "jackpot-ledger")
    assert "options" not in ledger  # no statement timeout: a first signing may be long
    server = await start_server(tuned, url, port=0)
    try:
        checkpointer = server.checkpointer
        assert checkpointer is not None
        deadline = time.monotonic() + 15
        while checkpointer.signed == 0:
            assert time.monotonic() < deadline, "the checkpoint worker never connected"
            await asyncio.sleep(0.1)
    finally:
        await server.stop(grace=1.0)
    started = time.monotonic()
    snapshot = await asyncio.to_thread(ledger_store.audit_snapshot, url)
    took = time.monotonic() - started
    assert ledger_store.CONNECT_TIMEOUT - 0.5 <= took < ledger_store.CONNECT_TIMEOUT + 3, took
    assert snapshot.head.size > 0
