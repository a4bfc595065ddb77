"""Fixtures of the integration tests that more than one module uses."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.adapters.database import DbPool
from jackpot_grpc.config import Settings
from jackpot_grpc.service.jackpot import JackpotService
from testkit.ledger_tamper import Sealed, run
from testkit.ledger_traffic import contribute, real_traffic
from testkit.random_refs import random_game_id


@pytest.fixture
def ops_settings(settings: Settings, database_url: str) -> Settings:
    """The test server's settings, pointed at the test database (what the CLI reads)."""
    return dataclasses.replace(
        settings, database=dataclasses.replace(settings.database, url=database_url)
    )


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[DbPool]:
    """A connection pool (psycopg_pool) on the test database, open before the test starts."""
    async with AsyncConnectionPool(database_url, min_size=1, max_size=4, open=False) as opened:
        await opened.open(wait=True, timeout=10)
        yield opened


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """main() configures logging for the process; put the test runner's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
async def sealed(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Sealed:
    """Real traffic, a checkpoint, more traffic, a second checkpoint, then a little more
    traffic that no checkpoint covers yet."""
    sealed = Sealed(
        database_url, tmp_path / "ledger.key", tmp_path / "ledger.key.pub", tmp_path / "log"
    )
    assert run(monkeypatch, sealed, "ledger", "keygen", "--out", str(sealed.key)) == 0
    await real_traffic(database_url)
    assert run(monkeypatch, sealed, "ledger", "checkpoint") == 0
    await real_traffic(database_url)
    assert run(monkeypatch, sealed, "ledger", "checkpoint") == 0
    async with AsyncConnectionPool(database_url, min_size=1, max_size=1, open=False) as pool:
        await pool.open(wait=True, timeout=10)
        await JackpotService(pool).contribute_many([contribute(random_game_id(), 4321)])
    capsys.readouterr()
    return sealed
