"""Who may call what, over a real channel to a real server with a clients file.

Every method against every role (and no or unknown credentials): the right answer, and a
refused call writes nothing. Also: the admin token, the audit's client, revocation and
new clients without a restart (through the real CLI), the failure throttle and its
metric, mTLS identities from generated certificates, and the open-mode listening rule.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc import cli
from jackpot_grpc.config import Settings
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.entrypoints.client_registry import POLL_SECONDS
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from jackpot_grpc.transport.tls import open_channel
from testkit.certs_ca import authority
from testkit.identity import Metadata, bearer, secured
from testkit.ledger_state import ledger_state
from testkit.ops_commands import ops_json
from testkit.random_refs import random_key, random_user

Stub = jackpot_pb2_grpc.JackpotServiceStub
OK, UNAUTHENTICATED, DENIED = "OK", "UNAUTHENTICATED", "PERMISSION_DENIED"
CALLERS = ("none", "unknown", "game", "reader", "admin")
READ = {"none": UNAUTHENTICATED, "unknown": UNAUTHENTICATED, "game": OK, "reader": OK, "admin": OK}
GAME = {**READ, "reader": DENIED, "admin": DENIED}
ADMIN = {**READ, "game": DENIED, "reader": DENIED}
EXPECTED = {
    "Contribute": GAME,
    "ContributeBatch": GAME,
    "Win": GAME,
    "GetPools": READ,
    "GetStatistics": READ,
    "GetConfig": READ,
    "UpdateConfig": ADMIN,
    "ListWins": READ,
    "SuspendPool": ADMIN,
    "ResumePool": ADMIN,
}


def requests() -> dict[str, Any]:
    """A valid request per method, fresh keys each time, so an allowed call succeeds."""
    return {
        "Contribute": pb.ContributeRequest(
            game_id="slots", wager_amount=1000, idempotency_key=random_key()
        ),
        "ContributeBatch": pb.ContributeBatchRequest(
            contributions=[pb.ContributeRequest(game_id="slots", wager_amount=500)]
        ),
        "Win": pb.WinRequest(
            group=pb.JACKPOT_GROUP_MAJOR, game_id="slots", user_id=random_user(), win_amount=1
        ),
        "GetPools": pb.GetPoolsRequest(),
        "GetStatistics": pb.GetStatisticsRequest(),
        "GetConfig": pb.GetConfigRequest(),
        "UpdateConfig": pb.UpdateConfigRequest(
            group=pb.JACKPOT_GROUP_MINOR, seed_amount=12000, actor="pat", reason="test"
        ),
        "ListWins": pb.ListWinsRequest(page_size=5),
        "SuspendPool": pb.SuspendPoolRequest(group=pb.JACKPOT_GROUP_MEGA, reason="test"),
        "ResumePool": pb.ResumePoolRequest(group=pb.JACKPOT_GROUP_MEGA),
    }


async def code_of(call: Awaitable[Any]) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)
    return OK


@pytest.fixture
async def closed(
    settings: Settings, database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[RunningServer, dict[str, str]]]:
    closed_settings, tokens = secured(settings, tmp_path, failure_limit=1000)
    running = await start_server(closed_settings, database_url, port=0)
    yield running, tokens
    await running.stop(grace=1.0)


@pytest.fixture
async def closed_stub(closed: tuple[RunningServer, dict[str, str]]) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{closed[0].port}") as channel:
        yield Stub(channel)


def credentials(caller: str, tokens: dict[str, str]) -> Metadata:
    if caller == "none":
        return ()
    return bearer(tokens.get(caller, "jpk_not-a-token-anyone-has"))


@pytest.mark.parametrize("method", list(EXPECTED))
async def test_each_role_gets_the_right_answer_and_refusals_write_nothing(
    method: str,
    closed: tuple[RunningServer, dict[str, str]],
    closed_stub: Stub,
    database_url: str,
) -> None:
    _, tokens = closed
    for caller in CALLERS:
        before = ledger_state(database_url)
        call = getattr(closed_stub, method)(
            requests()[method], metadata=credentials(caller, tokens), timeout=10
        )
        assert await code_of(call) == EXPECTED[method][caller], (method, caller)
        if EXPECTED[method][caller] != OK:
            assert ledger_state(database_url) == before, (method, caller)


async def test_health_and_reflection_stay_open(
    closed: tuple[RunningServer, dict[str, str]],
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{closed[0].port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflect.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        listed = [
            service.name
            async for answer in answers
            for service in answer.list_services_response.service
        ]
        assert set(listed) == {
            "jackpot.v1.JackpotService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }


async def test_audit_row_records_the_authenticated_client(
    closed: tuple[RunningServer, dict[str, str]], closed_stub: Stub, database_url: str
) -> None:
    _, tokens = closed
    reply = await closed_stub.UpdateConfig(
        requests()["UpdateConfig"], metadata=bearer(tokens["admin"]), timeout=10
    )
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT client, actor FROM config_audit WHERE id = %s", (reply.audit_id,)
        ).fetchone()
    assert row == ("test-admin", "pat")  # the client proven; the actor as typed


async def test_admin_token_is_the_admin_client(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    admin_only = dataclasses.replace(
        settings,
        auth=dataclasses.replace(settings.auth, admin_token="a-long-admin-secret-0123456789abcdef"),
    )
    running = await start_server(admin_only, database_url, port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = Stub(channel)
            assert await code_of(stub.GetPools(pb.GetPoolsRequest())) == UNAUTHENTICATED
            admin = bearer("a-long-admin-secret-0123456789abcdef")
            assert (
                await code_of(stub.Contribute(requests()["Contribute"], metadata=admin)) == DENIED
            )
            reply = await stub.UpdateConfig(requests()["UpdateConfig"], metadata=admin)
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT client FROM config_audit WHERE id = %s", (reply.audit_id,)
            ).fetchone()
        assert row == ("admin",)
    finally:
        await running.stop(grace=1.0)


async def test_config_update_dry_run_reads_with_the_admin_token(
    settings: Settings, database_url: str
) -> None:
    """`jackpot config update --dry-run` on a server host whose environment holds only
    JACKPOT_ADMIN_TOKEN reads GetConfig as that admin, as the real update sends with it."""
    admin_only = dataclasses.replace(
        settings,
        auth=dataclasses.replace(settings.auth, admin_token="a-long-admin-secret-0123456789abcdef"),
    )
    running = await start_server(admin_only, database_url, port=0)
    try:
        update = ("config", "update", "--grpc-target", f"127.0.0.1:{running.port}")
        code, data = await ops_json(
            admin_only, *update, "--group", "minor", "--rate", "0.006", "--dry-run"
        )
        assert code == 0 and data["after"]["contribution_rate"] == "0.0060000000"
        code, data = await ops_json(admin_only, *update, "--group", "minor", "--rate", "0.006")
        assert code == 0 and data["audit_id"] > 0
    finally:
        await running.stop(grace=1.0)


def run_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> float:
    """Seconds until `check()` held; fails after `within`."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not await check():
        assert loop.time() - started < within, f"not within {within} s"
        await asyncio.sleep(0.2)
    return loop.time() - started


async def test_clients_added_and_revoked_through_the_cli_without_a_restart(
    closed: tuple[RunningServer, dict[str, str]],
    closed_stub: Stub,
    capsys: pytest.CaptureFixture[str],
) -> None:
    running, tokens = closed
    path = str(running.settings.auth.clients_file)
    code, out = run_cli(
        "clients", "add", "slots-eu", "--role", "game", "--file", path, "--json", capsys=capsys
    )
    assert code == 0
    added = json.loads(out)
    assert (added["client"], added["role"]) == ("slots-eu", "game")
    new = bearer(added["token"])

    async def accepted() -> bool:
        return await code_of(closed_stub.GetPools(pb.GetPoolsRequest(), metadata=new)) == OK

    # The file is looked at every POLL_SECONDS: within that, with 5x room.
    await eventually(accepted, within=5 * POLL_SECONDS)

    code, out = run_cli("clients", "list", "--file", path, "--json", capsys=capsys)
    listed = {c["client"]: c for c in json.loads(out)["clients"]}
    assert listed["slots-eu"]["status"] == "active"
    assert added["token"] not in out

    code, _ = run_cli("clients", "revoke", "slots-eu", "--file", path, capsys=capsys)
    assert code == 0

    async def refused() -> bool:
        answer = await code_of(closed_stub.GetPools(pb.GetPoolsRequest(), metadata=new))
        return answer == UNAUTHENTICATED

    await eventually(refused, within=5 * POLL_SECONDS)
    # The others are untouched.
    game = bearer(tokens["game"])
    assert await code_of(closed_stub.GetPools(pb.GetPoolsRequest(), metadata=game)) == OK


async def test_a_peer_that_keeps_failing_is_refused_for_a_while(
    settings: Settings, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    throttled, tokens = secured(
        settings, tmp_path, failure_limit=3, failure_window=60.0, block_seconds=1.5
    )
    running = await start_server(throttled, database_url, port=0)
    wrong = "jpk_guess-number-one"
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = Stub(channel)
            game = bearer(tokens["game"])
            with caplog.at_level(logging.WARNING, logger="jackpot_grpc.entrypoints.auth"):
                for _ in range(3):
                    answer = await code_of(
                        stub.GetPools(pb.GetPoolsRequest(), metadata=bearer(wrong))
                    )
                    assert answer == UNAUTHENTICATED
                # Blocked now, even with a good token: a guesser learns nothing more.
                assert await code_of(stub.GetPools(pb.GetPoolsRequest(), metadata=game)) == (
                    "RESOURCE_EXHAUSTED"
                )
                await asyncio.sleep(1.6)
                assert await code_of(stub.GetPools(pb.GetPoolsRequest(), metadata=game)) == OK
        assert "reason=unknown_token" in caplog.text and "GetPools" in caplog.text
        assert wrong not in caplog.text and tokens["game"] not in caplog.text
        failures = running.metrics.registry.get_sample_value
        assert failures("jackpot_auth_failures_total", {"reason": "unknown_token"}) == 3
        assert failures("jackpot_auth_failures_total", {"reason": "throttled"}) == 1
    finally:
        await running.stop(grace=1.0)


async def test_open_mode_refuses_a_public_address_unless_allowed(
    settings: Settings, database_url: str
) -> None:
    public = dataclasses.replace(settings, grpc=dataclasses.replace(settings.grpc, host="0.0.0.0"))
    with pytest.raises(ConfigError, match="JACKPOT_ALLOW_OPEN=1"):
        await start_server(public, database_url, port=0)
    running = await start_server(
        dataclasses.replace(public, auth=dataclasses.replace(public.auth, allow_open=True)),
        database_url,
        port=0,
    )
    await running.stop(grace=0.5)


def test_open_mode_listens_on_loopback_by_default() -> None:
    open_ = Settings.from_env({})
    assert (open_.grpc.host, open_.gateway.host, open_.health.host) == ("127.0.0.1",) * 3
    closed = Settings.from_env({"JACKPOT_CLIENTS_FILE": "/etc/jackpot/clients.json"})
    assert (closed.grpc.host, closed.gateway.host, closed.health.host) == (
        "[::]",
        "0.0.0.0",
        "0.0.0.0",
    )
    assert Settings.from_env({"JACKPOT_ADMIN_TOKEN": "t"}).grpc.host == "[::]"


async def test_mtls_client_certificates_identify_clients(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    ca = authority(tmp_path / "ca")
    server_key, server_cert = ca.issue(tmp_path, "localhost")
    game_key, game_cert = ca.issue(tmp_path, "slots-eu.example")
    reader_key, reader_cert = ca.issue(tmp_path, "dashboards", dns=("dash.example",))
    stranger_key, stranger_cert = ca.issue(tmp_path, "stranger.example")
    rogue = authority(tmp_path / "rogue", "Rogue CA")
    rogue_key, rogue_cert = rogue.issue(tmp_path / "rogue", "slots-eu.example")

    path = tmp_path / "clients.json"
    for argv in (
        ["slots-eu", "--role", "game", "--cert-subject", "slots-eu.example", "--no-token"],
        ["dash", "--role", "reader", "--cert-subject", "dash.example", "--no-token"],
    ):
        assert cli.main(["clients", "add", *argv, "--file", str(path)]) == 0
    mtls = dataclasses.replace(
        settings,
        auth=dataclasses.replace(settings.auth, clients_file=path),
        tls=dataclasses.replace(
            settings.tls,
            cert_file=server_cert,
            key_file=server_key,
            client_ca_file=ca.cert,
            ca_file=ca.cert,
        ),
    )
    running = await start_server(mtls, database_url, port=0)

    async def answer(key: Path | None, cert: Path | None, method: str) -> str:
        client = dataclasses.replace(
            mtls, tls=dataclasses.replace(mtls.tls, client_key_file=key, client_cert_file=cert)
        )
        async with open_channel(client.tls, f"localhost:{running.port}") as channel:
            call = getattr(Stub(channel), method)(requests()[method], timeout=5)
            return await code_of(call)

    try:
        assert await answer(game_key, game_cert, "Contribute") == OK
        assert await answer(reader_key, reader_cert, "GetPools") == OK  # matched by its SAN
        assert await answer(reader_key, reader_cert, "Contribute") == DENIED
        assert await answer(stranger_key, stranger_cert, "GetPools") == UNAUTHENTICATED
        # Not signed by the client CA, or no certificate: no TLS session at all.
        assert await answer(rogue_key, rogue_cert, "GetPools") == "UNAVAILABLE"
        assert await answer(None, None, "GetPools") == "UNAVAILABLE"
    finally:
        await running.stop(grace=1.0)
