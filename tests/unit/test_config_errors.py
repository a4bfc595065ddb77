"""A bad setting raises ConfigError naming its variable; only the CLI turns it into an exit
code, with the message and the exit status an uncaught SystemExit gave before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jackpot_grpc.config import Settings, log_format_from_env
from jackpot_grpc.config_error import ConfigError

ROOT = Path(__file__).resolve().parents[2]

# (variable, bad value, what the message says): one per kind of reader.
BAD_SETTINGS = [
    ("GRPC_PORT", "fifty", "GRPC_PORT must be an integer, got 'fifty'"),
    ("DB_POOL_TIMEOUT", "soon", "DB_POOL_TIMEOUT must be a number, got 'soon'"),
    ("JACKPOT_BATCHING", "maybe", "JACKPOT_BATCHING must be on or off, got 'maybe'"),
    ("JACKPOT_EVENT_LOOP", "trio", "JACKPOT_EVENT_LOOP must be one of uvloop, asyncio"),
    ("JACKPOT_MAX_WAGER", "0", "JACKPOT_MAX_WAGER must be between 1 and"),
    ("JACKPOT_MAX_RATE_SUM", "1.5", "JACKPOT_MAX_RATE_SUM must be a decimal above 0"),
    ("JACKPOT_TRUSTED_PROXIES", "10.0.0.0/33", "JACKPOT_TRUSTED_PROXIES must list addresses"),
    ("JACKPOT_LOG_FORMAT", "xml", "JACKPOT_LOG_FORMAT must be one of text, json"),
    ("JACKPOT_BATCH_AGE_LIMIT", "1", "JACKPOT_BATCH_AGE_LIMIT (1 s) must not be below"),
]


@pytest.mark.parametrize(
    ("name", "value", "message"), BAD_SETTINGS, ids=[b[0] for b in BAD_SETTINGS]
)
def test_a_bad_setting_raises_config_error_naming_it(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({name: value})
    assert str(refused.value).startswith(message)
    assert isinstance(refused.value, ValueError)  # a wrong value, catchable as one


def test_the_log_format_alone_raises_config_error_too() -> None:
    with pytest.raises(ConfigError, match="JACKPOT_LOG_FORMAT"):
        log_format_from_env({"JACKPOT_LOG_FORMAT": "xml"})


def _jackpot(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JACKPOT_", "DB_", "GRPC_"))}
    return subprocess.run(
        [sys.executable, "-m", "jackpot_grpc.cli", *argv],
        env={**clean, "JACKPOT_LOG_DIR": str(tmp_path / "logs"), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "value", "stderr"),
    [
        ("DB_POOL_MIN", "two", "DB_POOL_MIN must be an integer, got 'two'\n"),
        ("JACKPOT_LOG_FORMAT", "xml", "JACKPOT_LOG_FORMAT must be one of text, json, got 'xml'\n"),
    ],
)
def test_an_operator_command_exits_1_with_the_message_alone(
    name: str, value: str, stderr: str, tmp_path: Path
) -> None:
    done = _jackpot(tmp_path, "migrate", **{name: value})
    assert (done.returncode, done.stderr, done.stdout) == (1, stderr, "")


def test_a_service_logs_the_bad_setting_and_exits_1(tmp_path: Path) -> None:
    done = _jackpot(tmp_path, "serve", DB_POOL_MIN="two")
    assert done.returncode == 1
    logged = (tmp_path / "logs" / "application.log").read_text()
    assert "jackpot serve failed to start: DB_POOL_MIN must be an integer, got 'two'" in logged
    assert "Traceback" not in logged + done.stderr
