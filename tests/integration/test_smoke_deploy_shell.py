"""`jackpot smoke` as the deploy script runs it: in a shell with the service's settings
loaded (DATABASE_URL, GRPC_PORT, HEALTH_PORT, perhaps JACKPOT_GRPC_TARGET), against the
instance it is pointed at, moving no money unless told to (--write), and saying what a
closed service needs (a game-role JACKPOT_TOKEN)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import pytest

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from testkit.identity import secured
from testkit.ledger_state import ledger_state
from testkit.ops_commands import ops_json
from testkit.paths import PROJECT_ROOT
from testkit.ports import free_port

DRY_STEPS = [
    "read pools",
    "server knows validate_only",
    "contribute (validate only)",
    "nothing contributed",
    "win minor (validate only)",
    "nothing paid",
    "audit books",
]


def deploy_shell(
    settings: Settings,
    server: RunningServer,
    database_url: str,
    grpc_target: str | None = None,
    client_token: str | None = None,
) -> Settings:
    """The settings of a shell that loaded the service's environment file."""
    return dataclasses.replace(
        settings,
        database=dataclasses.replace(settings.database, url=database_url),
        grpc=dataclasses.replace(
            settings.grpc,
            port=server.port,
            # JACKPOT_GRPC_TARGET's default spelling
            target=grpc_target or f"localhost:{server.port}",
        ),
        health=dataclasses.replace(settings.health, port=server.health_port),
        auth=settings.auth
        if client_token is None
        else dataclasses.replace(settings.auth, client_token=client_token),
    )


@pytest.mark.parametrize(
    ("env_target", "argv"),
    [
        ("localhost:{port}", ()),  # JACKPOT_GRPC_TARGET=localhost:GRPC_PORT, as the runbook's
        ("127.0.0.1:{port}", ()),
        ("localhost:{port}", ("--grpc-target", "127.0.0.1:{port}")),
        ("localhost:{port}", ("--grpc-target", "localhost:{port}")),
    ],
)
async def test_smoke_runs_in_the_deploy_shell_and_moves_no_money(
    server: RunningServer,
    settings: Settings,
    database_url: str,
    env_target: str,
    argv: tuple[str, ...],
) -> None:
    port = str(server.port)
    shell = deploy_shell(settings, server, database_url, grpc_target=env_target.format(port=port))
    before = ledger_state(database_url)
    code, data = await ops_json(shell, "smoke", *(a.format(port=port) for a in argv))
    assert code == 0, data
    assert data["write"] is False
    assert [s["step"] for s in data["steps"]] == DRY_STEPS
    assert all(s["ok"] for s in data["steps"]), data["steps"]
    assert data["steps"][-1]["detail"].startswith("books balance: minor=")
    assert ledger_state(database_url) == before  # not a cent moved, no key recorded


async def test_smoke_write_moves_money_and_says_so_loudly(
    server: RunningServer,
    settings: Settings,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shell = deploy_shell(settings, server, database_url)
    before = ledger_state(database_url)
    code, data = await ops_json(shell, "smoke", "--write")
    assert code == 0, data
    assert "MOVES REAL MONEY" in capsys.readouterr().err
    assert data["write"] is True and "replay win" in [s["step"] for s in data["steps"]]
    after = ledger_state(database_url)
    assert after["contributions"][0] == before["contributions"][0] + 1
    assert after["wins"][0] == before["wins"][0] + 1


async def test_smoke_refuses_to_guess_another_instance_s_health_port(
    server: RunningServer, settings: Settings, database_url: str
) -> None:
    shell = deploy_shell(settings, server, database_url)
    for other in ("green:50052", f"localhost:{free_port()}"):
        code, data = await ops_json(shell, "smoke", "--grpc-target", other)
        assert code == 1
        assert f"{other} is not this host's instance" in data["error"]
        assert "--health-url" in data["error"]


@pytest.fixture
async def closed_server(settings: Settings, database_url: str, tmp_path: Path) -> Any:
    closed, tokens = secured(settings, tmp_path)
    running = await start_server(closed, database_url, port=0)
    yield running, tokens
    await running.stop(grace=1.0)


async def test_smoke_on_a_closed_service_says_it_needs_a_game_role_token(
    closed_server: tuple[RunningServer, dict[str, str]], settings: Settings, database_url: str
) -> None:
    server, tokens = closed_server
    for token, code_name in ((None, "UNAUTHENTICATED"), (tokens["reader"], "PERMISSION_DENIED")):
        shell = deploy_shell(settings, server, database_url, client_token=token)
        code, data = await ops_json(shell, "smoke", "--no-audit")
        assert code == 1
        failed = next(s for s in data["steps"] if not s["ok"])
        assert failed["detail"].startswith(code_name), failed
        assert "JACKPOT_TOKEN" in failed["detail"] and "game role" in failed["detail"]
        assert ("JACKPOT_TOKEN is not set" in failed["detail"]) == (token is None)

    shell = deploy_shell(settings, server, database_url, client_token=tokens["game"])
    code, data = await ops_json(shell, "smoke")
    assert code == 0, data


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["test-smoke"], ["jackpot smoke"]),
        (["test-smoke", "TARGET=localhost:53051"], ["jackpot smoke --grpc-target localhost:53051"]),
        (
            ["test-post-deploy", "TARGET=green:50052", "HEALTH_URL=http://green:3011"],
            [
                "jackpot health --grpc-target green:50052 --health-url http://green:3011",
                "jackpot smoke --grpc-target green:50052 --health-url http://green:3011",
            ],
        ),
        (["test-smoke", "SMOKE_ARGS=--write"], ["jackpot smoke --write"]),
    ],
)
def test_make_smoke_targets_pass_the_instance(argv: list[str], expected: list[str]) -> None:
    done = subprocess.run(
        ["make", "-n", *argv], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    commands = [" ".join(line.split()) for line in done.stdout.splitlines()]
    ran = [c.split("/bin/", 1)[1] for c in commands if "/bin/jackpot " in c]
    assert ran == expected
