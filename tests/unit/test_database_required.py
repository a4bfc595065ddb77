"""No DATABASE_URL: the service refuses to start unless the embedded server is asked for;
and `serve` migrates only when asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jackpot_grpc import cli
from jackpot_grpc.config import Settings
from jackpot_grpc.ops.target import NO_DATABASE, open_database


def test_open_database_refuses_without_url_or_embedded_opt_in(tmp_path: Path) -> None:
    settings = Settings.from_env({"JACKPOT_DATA_DIR": str(tmp_path / "pg")})
    assert settings.database_url is None and not settings.embedded_db
    with pytest.raises(SystemExit) as refused, open_database(settings):
        pytest.fail("opened a database without DATABASE_URL or JACKPOT_EMBEDDED_DB")
    assert refused.value.code == NO_DATABASE
    assert not (tmp_path / "pg").exists(), "an embedded server was started anyway"


def test_embedded_mode_is_an_explicit_setting() -> None:
    assert Settings.from_env({"JACKPOT_EMBEDDED_DB": "1"}).embedded_db
    assert not Settings.from_env({"JACKPOT_EMBEDDED_DB": "0"}).embedded_db


@pytest.mark.parametrize("command", ["serve", "migrate", "audit"])
def test_commands_exit_with_one_line_when_no_database_is_set(command: str, tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("JACKPOT_")
    }
    env["JACKPOT_LOG_DIR"] = str(tmp_path / "logs")
    done = subprocess.run(
        [sys.executable, "-m", "jackpot_grpc.cli", command],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    if command == "serve":  # a service logs its failure to start (stdout, application.log)
        assert NO_DATABASE in done.stdout.strip().splitlines()[-1]
        assert NO_DATABASE in (tmp_path / "logs" / "application.log").read_text()
    else:
        assert done.stderr.strip().splitlines()[-1] == NO_DATABASE
    assert not (tmp_path / ".data").exists()


def test_serve_migrates_only_when_asked() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["serve"]).migrate is None  # falls back to the setting
    assert parser.parse_args(["serve", "--migrate"]).migrate is True
    assert parser.parse_args(["serve", "--no-migrate"]).migrate is False
    assert Settings.from_env({}).migrate_on_start is False
    assert Settings.from_env({"JACKPOT_MIGRATE_ON_START": "1"}).migrate_on_start is True


def test_run_time_directories_default_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.log_dir == tmp_path / "logs"
    assert settings.backup_dir == tmp_path / "backups"
    assert settings.data_dir == tmp_path / ".data" / "postgres"
    chosen = Settings.from_env(
        {"JACKPOT_LOG_DIR": "/var/log/j", "JACKPOT_BACKUP_DIR": "/b", "JACKPOT_DATA_DIR": "/d"}
    )
    assert (chosen.log_dir, chosen.backup_dir, chosen.data_dir) == (
        Path("/var/log/j"),
        Path("/b"),
        Path("/d"),
    )


# Modules that still read the source checkout at run time, each with what replaces it.
STILL_READING_THE_CHECKOUT: dict[str, str] = {}


def test_no_run_time_module_reads_the_source_checkout() -> None:
    package = Path(cli.__file__).parent
    readers = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "PROJECT_ROOT" in path.read_text() and path.name != "config.py"
    }
    assert readers <= set(STILL_READING_THE_CHECKOUT), readers
