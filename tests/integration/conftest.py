"""Fixtures of the integration tests that more than one module uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.service.jackpot import JackpotService
from testkit.ledger_tamper import Sealed, run
from testkit.random_refs import random_game_id
from tests.integration.test_audit_proofs import contribute, real_traffic


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
