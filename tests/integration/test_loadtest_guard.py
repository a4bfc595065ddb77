"""`jackpot loadtest` never writes into a ledger that holds rows unless --allow-writes is
given: a blue-green check against the shared database must not add real contributions.
Reads and validate_only writes go ahead; the ledger is asked of the target (GetStatistics),
never of this shell's database."""

from __future__ import annotations

import asyncio
import json

import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer
from testkit.ledger_state import ledger_state
from testkit.ops_commands import run_ops
from testkit.ports import free_port

SHORT = ("--duration", "0.5", "--warmup", "0", "--concurrency", "2", "--rate", "20")


async def loadtest(settings: Settings, server: RunningServer, *argv: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code, out = await asyncio.to_thread(
        run_ops,
        settings,
        "loadtest",
        "--grpc-target",
        f"127.0.0.1:{server.port}",
        *SHORT,
        *argv,
        "--json",
    )
    return code, json.loads(out)


@pytest.fixture
async def used_ledger(
    server: RunningServer, stub: jackpot_pb2_grpc.JackpotServiceStub
) -> RunningServer:
    """The server's ledger, holding one real contribution (a shared, live ledger)."""
    await stub.Contribute(pb.ContributeRequest(game_id="real", wager_amount=1000))
    return server


@pytest.mark.parametrize("kind", ["contribute", "contribute_batch"])
async def test_a_write_load_is_refused_on_a_ledger_that_holds_rows(
    used_ledger: RunningServer, settings: Settings, database_url: str, kind: str
) -> None:
    before = ledger_state(database_url)
    code, data = await loadtest(settings, used_ledger, "--kind", kind, "--batch-items", "5")
    assert code == 1
    assert "holds 1 contributions and 0 wins" in data["error"]
    assert "--allow-writes" in data["error"] and "--validate-only" in data["error"]
    assert ledger_state(database_url) == before


async def test_a_rest_write_load_is_refused_too(
    used_ledger: RunningServer, settings: Settings, database_url: str
) -> None:
    before = ledger_state(database_url)
    rest = f"http://127.0.0.1:{free_port()}"  # refused before any call: never reached
    code, data = await loadtest(settings, used_ledger, "--kind", "get_pools", "--rest-url", rest)
    assert code == 1 and "holds 1 contributions" in data["error"]
    assert ledger_state(database_url) == before


async def test_reads_and_validate_only_writes_go_ahead_and_write_nothing(
    used_ledger: RunningServer, settings: Settings, database_url: str
) -> None:
    before = ledger_state(database_url)
    for argv in (
        ("--kind", "get_pools"),
        ("--kind", "contribute", "--validate-only"),
        ("--kind", "contribute_batch", "--batch-items", "5", "--validate-only"),
    ):
        code, data = await loadtest(settings, used_ledger, *argv)
        assert code == 0, data
        assert data["loads"][0]["calls"] > 0
    assert ledger_state(database_url) == before


async def test_allow_writes_writes_and_says_so(
    used_ledger: RunningServer,
    settings: Settings,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = ledger_state(database_url)
    code, data = await loadtest(settings, used_ledger, "--kind", "contribute", "--allow-writes")
    assert code == 0, data
    assert "writes REAL contributions" in capsys.readouterr().err
    after = ledger_state(database_url)
    assert after["contributions"][0] >= before["contributions"][0] + data["loads"][0]["calls"]


async def test_a_target_that_cannot_say_is_refused_for_writes(settings: Settings) -> None:
    dead = f"127.0.0.1:{free_port()}"
    code, out = await asyncio.to_thread(
        run_ops, settings, "loadtest", "--grpc-target", dead, *SHORT, "--timeout", "1", "--json"
    )
    assert code == 1
    assert "cannot tell whether the ledger" in json.loads(out)["error"]


async def test_validate_only_on_a_read_load_is_refused_not_ignored(
    server: RunningServer, settings: Settings
) -> None:
    """`make test-load LOAD_ARGS=--validate-only` keeps KIND=get_pools: the operator meant
    the write path, and a read load would pass without ever touching it."""
    code, data = await loadtest(settings, server, "--kind", "get_pools", "--validate-only")
    assert code == 1
    assert "--validate-only" in data["error"] and "--kind contribute" in data["error"]
