"""Weak secrets are refused at start, with an error that says what to do: a short admin
token, a clients file or TLS key others may read or write, a clients file that cannot be
read at all; and `jackpot clients` never writes a file it could not read back."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from jackpot_grpc import cli
from jackpot_grpc.adapters import clients_file
from jackpot_grpc.config import Settings
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.entrypoints.server import start_server
from testkit.certs_ca import authority

LONG = "a" * 32


async def starts(settings: Settings, database_url: str) -> None:
    server = await start_server(settings, database_url, port=0)
    await server.stop(grace=0.5)


async def test_a_short_admin_token_is_refused_at_start(
    settings: Settings, database_url: str
) -> None:
    for short in ("a", "change-me", LONG[:-1]):
        with pytest.raises(ConfigError, match=r"JACKPOT_ADMIN_TOKEN has \d+ characters.*32"):
            await starts(
                dataclasses.replace(
                    settings, auth=dataclasses.replace(settings.auth, admin_token=short)
                ),
                database_url,
            )
    await starts(
        dataclasses.replace(settings, auth=dataclasses.replace(settings.auth, admin_token=LONG)),
        database_url,
    )


async def test_a_clients_file_others_may_read_or_write_is_refused_at_start(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "clients.json"
    assert clients_file.add_client(path, "g1", "game") is not None
    with_file = dataclasses.replace(
        settings, auth=dataclasses.replace(settings.auth, clients_file=path)
    )
    for mode in (0o644, 0o660, 0o606, 0o666):
        os.chmod(path, mode)
        with pytest.raises(ConfigError, match=rf"mode {mode:04o}.*chmod 0600"):
            await starts(with_file, database_url)
    for mode in (0o600, 0o640, 0o440):
        os.chmod(path, mode)
        await starts(with_file, database_url)


async def test_a_clients_file_that_is_not_json_is_refused_at_start(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "clients.json"
    path.write_text("{ half a file")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match=r"JACKPOT_CLIENTS_FILE cannot be used: .*not valid JSON"):
        await starts(
            dataclasses.replace(
                settings, auth=dataclasses.replace(settings.auth, clients_file=path)
            ),
            database_url,
        )


async def test_a_tls_key_others_may_read_is_refused_at_start(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    key, cert = authority(tmp_path / "ca").issue(tmp_path, "localhost")
    tls = dataclasses.replace(
        settings,
        tls=dataclasses.replace(settings.tls, cert_file=cert, key_file=key),
        auth=dataclasses.replace(settings.auth, admin_token=LONG),
    )
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError, match=r"GRPC_TLS_KEY .* mode 0644.*chmod 0600"):
        await starts(tls, database_url)
    os.chmod(key, 0o600)
    await starts(tls, database_url)


def test_a_short_jackpot_token_is_refused_by_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JACKPOT_TOKEN", "change-me")
    # Nothing listens there: the token is refused before any connection is tried; the
    # CLI prints the ConfigError alone and exits 1.
    assert cli.main(["health", "--grpc-target", "127.0.0.1:9", "--timeout", "1"]) == 1
    assert capsys.readouterr().err.startswith("JACKPOT_TOKEN has 9 characters")


def test_clients_commands_refuse_to_write_what_would_not_read_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "clients.json"
    assert clients_file.add_client(path, "g1", "game") is not None
    before = path.read_bytes()
    # An empty certificate subject: the entry would be invalid once written.
    code = cli.main(
        ["clients", "add", "g2", "--role", "game", "--cert-subject", "", "--file", str(path)]
    )
    assert code == 1
    assert "refusing to write" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_clients_commands_keep_invalid_entries_and_refuse_their_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "clients.json"
    assert clients_file.add_client(path, "g1", "game") is not None
    body = json.loads(path.read_text())
    bad = {"name": "bad", "roles": ["game"], "token_sha256": "z" * 64}
    body["clients"].append(bad)
    path.write_text(json.dumps(body))
    before = path.read_bytes()
    assert cli.main(["clients", "add", "bad", "--role", "reader", "--file", str(path)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert path.read_bytes() == before
    assert cli.main(["clients", "revoke", "bad", "--file", str(path)]) == 1
    assert "admits nobody" in capsys.readouterr().err
    # A revocation still goes through, and the invalid entry is kept as it was.
    assert cli.main(["clients", "revoke", "g1", "--file", str(path)]) == 0
    after = json.loads(path.read_text())["clients"]
    assert after[1] == bad and after[0]["revoked_at"]
    capsys.readouterr()
    # `list` shows it, as invalid.
    assert cli.main(["clients", "list", "--file", str(path), "--json"]) == 0
    listed = {c["client"]: c for c in json.loads(capsys.readouterr().out)["clients"]}
    assert listed["bad"]["status"].startswith("INVALID")
