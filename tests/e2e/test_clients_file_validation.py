"""A bad clients file over a real server: a malformed entry disables only itself.

The defect this guards against: a hand-added entry whose token_sha256 was 64 characters but
not hex made the whole file fail after its stamp was recorded, so a revocation written
next never applied (the revoked client kept writing money), the first call got UNKNOWN
with the exception text, and a restart failed. Here: every valid entry, revocations
included, applies at once; the invalid one is logged at ERROR with its line, counted and
shown in /health; a file that cannot be applied at all keeps the last good set and is
tried again until it applies; the server starts with the valid entries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.adapters import clients_file
from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from testkit.identity import bearer
from testkit.random_refs import random_key

Stub = jackpot_pb2_grpc.JackpotServiceStub
BAD_DIGEST = "z" * 64  # the right length, not hex


@dataclasses.dataclass
class Clients:
    path: Path
    tokens: dict[str, str]  # by client name


@pytest.fixture
def two_games(tmp_path: Path) -> Clients:
    path = tmp_path / "clients.json"
    tokens = {}
    for name in ("g1", "g2"):
        token = clients_file.add_client(path, name, "game")
        assert token is not None
        tokens[name] = token
    return Clients(path, tokens)


@pytest.fixture
async def running(
    settings: Settings, database_url: str, two_games: Clients
) -> AsyncIterator[RunningServer]:
    server = await start_server(
        dataclasses.replace(
            settings, auth=dataclasses.replace(settings.auth, clients_file=two_games.path)
        ),
        database_url,
        port=0,
    )
    yield server
    await server.stop(grace=1.0)


async def answer(server: RunningServer, token: str) -> str:
    """A Contribute (money written) with `token`: OK or the status code's name."""
    request = pb.ContributeRequest(game_id="slots", wager_amount=1000, idempotency_key=random_key())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        try:
            await Stub(channel).Contribute(request, metadata=bearer(token), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
    return "OK"


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not await check():
        assert loop.time() - started < within, f"not within {within} s"
        await asyncio.sleep(0.2)


async def health(server: RunningServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{server.health_port}/health"
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
            body: dict[str, Any] = await response.json()
    return body


def add_by_hand(path: Path, entry: dict[str, Any]) -> None:
    """What an operator's editor does: the same file, one more entry, mode kept."""
    body = json.loads(path.read_text())
    body["clients"].append(entry)
    path.write_text(json.dumps(body, indent=2) + "\n")


def _problems(server: RunningServer, kind: str) -> float | None:
    return server.health_http.registry.get_sample_value(
        "jackpot_clients_file_problems_total", {"problem": kind}
    )


async def test_a_malformed_entry_does_not_stop_a_revocation(
    running: RunningServer,
    two_games: Clients,
    caplog: pytest.LogCaptureFixture,
) -> None:
    g1, g2 = two_games.tokens["g1"], two_games.tokens["g2"]
    assert await answer(running, g1) == "OK"
    add_by_hand(two_games.path, {"name": "bad", "roles": ["game"], "token_sha256": BAD_DIGEST})
    clients_file.revoke_client(two_games.path, "g1")  # what `jackpot clients revoke g1` does
    answers: list[str] = []

    async def g1_refused() -> bool:
        answers.append(await answer(running, g1))
        return answers[-1] == "UNAUTHENTICATED"

    with caplog.at_level(logging.ERROR, logger="jackpot_grpc.entrypoints.client_registry"):
        await eventually(g1_refused, within=10.0)
    # Never a server error on the way, and the valid client still writes.
    assert set(answers) <= {"OK", "UNAUTHENTICATED"}, answers
    assert await answer(running, g2) == "OK"
    # The bad entry is kept in the file, and named at ERROR with its position and line.
    assert [c["name"] for c in json.loads(two_games.path.read_text())["clients"]][-1] == "bad"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("entry 3" in m and "line " in m and "'bad'" in m for m in errors), errors
    # Counted, and shown on the health port; the server itself stays healthy.
    assert _problems(running, "invalid_entry") == 1
    body = await health(running)
    state = body["checks"]["clients_file"]
    assert state["status"] == "invalid_entries"
    (entry,) = state["invalid_entries"]
    assert (entry["entry"], entry["client"]) == (3, "bad")
    assert entry["line"] > 1 and "token_sha256" in entry["problem"]
    assert state["active_clients"] == 1  # g2; g1 revoked, bad disabled
    assert body["status"] == "healthy"


async def test_the_server_starts_with_the_valid_entries(
    settings: Settings, database_url: str, two_games: Clients
) -> None:
    add_by_hand(two_games.path, {"name": "bad", "roles": ["game"], "token_sha256": BAD_DIGEST})
    clients_file.revoke_client(two_games.path, "g1")
    server = await start_server(
        dataclasses.replace(
            settings, auth=dataclasses.replace(settings.auth, clients_file=two_games.path)
        ),
        database_url,
        port=0,
    )
    try:
        assert await answer(server, two_games.tokens["g1"]) == "UNAUTHENTICATED"
        assert await answer(server, two_games.tokens["g2"]) == "OK"
        assert (await health(server))["checks"]["clients_file"]["invalid_entries"][0]["entry"] == 3
    finally:
        await server.stop(grace=1.0)


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "g3", "roles": ["game"], "token_sha256": "ab" * 31},  # too short
        {"name": "g3", "roles": ["root"], "token_sha256": "ab" * 32},  # unknown role
        {"name": "g3", "roles": ["game"], "cert_subjects": [""]},
        {"name": "g3", "roles": ["game"], "token_sha256": "ab" * 32, "revoked_at": False},
        ["not", "an", "object"],
    ],
)
async def test_each_kind_of_bad_entry_disables_only_itself(
    running: RunningServer, two_games: Clients, entry: Any
) -> None:
    add_by_hand(two_games.path, entry)
    clients_file.revoke_client(two_games.path, "g1")

    async def g1_refused() -> bool:
        return await answer(running, two_games.tokens["g1"]) == "UNAUTHENTICATED"

    await eventually(g1_refused, within=10.0)
    assert await answer(running, two_games.tokens["g2"]) == "OK"
    assert (await health(running))["checks"]["clients_file"]["status"] == "invalid_entries"


async def test_a_duplicate_name_cannot_undo_a_revocation(
    running: RunningServer, two_games: Clients
) -> None:
    body = json.loads(two_games.path.read_text())
    (g1,) = [c for c in body["clients"] if c["name"] == "g1"]
    clients_file.revoke_client(two_games.path, "g1")
    add_by_hand(two_games.path, {**g1, "revoked_at": None})  # g1 again, active

    async def g1_refused() -> bool:
        return await answer(running, two_games.tokens["g1"]) == "UNAUTHENTICATED"

    await eventually(g1_refused, within=10.0)
    assert await answer(running, two_games.tokens["g2"]) == "OK"


async def test_an_unreadable_file_keeps_the_last_good_set_and_is_retried(
    running: RunningServer, two_games: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    g2 = two_games.tokens["g2"]
    assert await answer(running, g2) == "OK"
    good = two_games.path.read_text()
    with caplog.at_level(logging.ERROR, logger="jackpot_grpc.entrypoints.client_registry"):
        two_games.path.write_text("{ half a file")
        await eventually(lambda: _has_error(running, g2), within=10.0)
    assert await answer(running, g2) == "OK"  # the last good set
    assert any("NOT applied" in r.getMessage() for r in caplog.records)
    assert _problems(running, "not_applied") == 1
    two_games.path.write_text(good)
    await eventually(lambda: _applied(running, g2), within=10.0)
    assert await answer(running, two_games.tokens["g1"]) == "OK"


async def _has_error(server: RunningServer, token: str) -> bool:
    await answer(server, token)  # a call makes the server look at the file
    return bool((await health(server))["checks"]["clients_file"]["error"])


async def _applied(server: RunningServer, token: str) -> bool:
    await answer(server, token)
    return bool((await health(server))["checks"]["clients_file"]["status"] == "ok")


async def test_a_file_others_may_write_is_not_applied_until_its_mode_is_fixed(
    running: RunningServer, two_games: Clients
) -> None:
    g1, g2 = two_games.tokens["g1"], two_games.tokens["g2"]
    clients_file.revoke_client(two_games.path, "g2")  # written 0600: applies
    await eventually(lambda: _answers(running, g2, "UNAUTHENTICATED"), within=10.0)
    # Someone else's edit: g2 active again, in a file every user may write.
    body = json.loads(two_games.path.read_text())
    for client in body["clients"]:
        client["revoked_at"] = None
    two_games.path.write_text(json.dumps(body))
    os.chmod(two_games.path, 0o666)
    await eventually(lambda: _has_error(running, g1), within=10.0)
    state = (await health(running))["checks"]["clients_file"]
    assert "0666" in state["error"] and "chmod 0600" in state["error"]
    assert await answer(running, g2) == "UNAUTHENTICATED"  # not applied
    # The mode fixed, contents unchanged (same mtime, size, inode): applied at the next check.
    os.chmod(two_games.path, 0o600)
    await eventually(lambda: _answers(running, g2, "OK"), within=10.0)


async def _answers(server: RunningServer, token: str, code: str) -> bool:
    return await answer(server, token) == code
