"""No DATABASE_URL: the service refuses to start unless the embedded server is asked for,
operator commands refuse whatever is asked (never a throwaway database), and only `make run`,
`make serve` and `make test` ask for it; and `serve` migrates only when asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jackpot_grpc import cli
from jackpot_grpc.config import Settings
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.ops.target import NO_DATABASE, OPS_NO_DATABASE, open_database
from testkit.ops_commands import run_ops

ROOT = Path(__file__).resolve().parents[2]


def test_open_database_refuses_without_url_or_embedded_opt_in(tmp_path: Path) -> None:
    settings = Settings.from_env({"JACKPOT_DATA_DIR": str(tmp_path / "pg")})
    assert settings.database.url is None and not settings.database.embedded
    with pytest.raises(ConfigError) as refused, open_database(settings, service=True):
        pytest.fail("opened a database without DATABASE_URL or JACKPOT_EMBEDDED_DB")
    assert str(refused.value) == NO_DATABASE
    assert not (tmp_path / "pg").exists(), "an embedded server was started anyway"


def test_embedded_mode_is_an_explicit_setting() -> None:
    assert Settings.from_env({"JACKPOT_EMBEDDED_DB": "1"}).database.embedded
    assert not Settings.from_env({"JACKPOT_EMBEDDED_DB": "0"}).database.embedded


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
        assert done.stderr.strip().splitlines()[-1] == OPS_NO_DATABASE
    assert not (tmp_path / ".data").exists()


# Every operator command that reads or writes the database, as the make targets run them.
DATABASE_COMMANDS = [
    ("migrate",),
    ("migrate", "--dry-run"),
    ("audit",),
    ("backup", "create"),
    ("backup", "restore", "x.dump", "--database", "jackpot_restored"),
    ("db", "check"),
    ("db", "pool-status"),
    ("db", "maintain"),
    ("db", "long-queries"),
    ("report",),
    ("diagnostics",),
    ("config", "show", "--from-db"),
]


@pytest.mark.parametrize("argv", DATABASE_COMMANDS, ids=" ".join)
def test_operator_commands_never_start_the_embedded_database(
    argv: tuple[str, ...], tmp_path: Path
) -> None:
    # Asked for the embedded server (as the Makefile once exported for every target), an
    # operator command still refuses: it would back up, audit or migrate a throwaway.
    data_dir = tmp_path / "pg"
    settings = Settings.from_env({"JACKPOT_EMBEDDED_DB": "1", "JACKPOT_DATA_DIR": str(data_dir)})
    with pytest.raises(ConfigError) as refused:
        run_ops(settings, *argv)
    assert str(refused.value) == OPS_NO_DATABASE
    assert not data_dir.exists(), "an embedded server was started"


def _fake_bin(directory: Path) -> Path:
    """jackpot and pytest that print the JACKPOT_EMBEDDED_DB they were given."""
    directory.mkdir()
    for name in ("jackpot", "pytest"):
        tool = directory / name
        tool.write_text('#!/bin/sh\necho "JACKPOT_EMBEDDED_DB=${JACKPOT_EMBEDDED_DB-unset}"\n')
        tool.chmod(0o755)
    return directory


@pytest.mark.parametrize(
    ("target", "embedded"),
    [
        ("run", "1"),
        ("serve", "1"),
        ("test", "1"),
        ("backup-create", "unset"),
        ("audit", "unset"),
        ("db-migrate", "unset"),
        ("migrate", "unset"),
        ("db-migrate-dry-run", "unset"),
        ("db-health-check", "unset"),
        ("db-pool-status", "unset"),
        ("performance-report", "unset"),
        ("diagnostics", "unset"),
        ("config-validate", "unset"),
    ],
)
def test_only_run_serve_and_test_targets_ask_for_the_embedded_database(
    target: str, embedded: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MAKEFLAGS")}
    env.pop("JACKPOT_EMBEDDED_DB", None)
    fakes = _fake_bin(tmp_path / "bin")
    done = subprocess.run(
        # -o: the virtualenv counts as installed; BIN: the fakes run instead of the tools.
        ["make", "--no-print-directory", "-o", ".venv/.installed", target, f"BIN={fakes}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"JACKPOT_EMBEDDED_DB={embedded}" in done.stdout.splitlines()


def test_serve_migrates_only_when_asked() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["serve"]).migrate is None  # falls back to the setting
    assert parser.parse_args(["serve", "--migrate"]).migrate is True
    assert parser.parse_args(["serve", "--no-migrate"]).migrate is False
    assert Settings.from_env({}).database.migrate_on_start is False
    assert Settings.from_env({"JACKPOT_MIGRATE_ON_START": "1"}).database.migrate_on_start is True


def test_run_time_directories_default_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.process.log_dir == tmp_path / "logs"
    assert settings.database.backup_dir == tmp_path / "backups"
    assert settings.database.data_dir == tmp_path / ".data" / "postgres"
    chosen = Settings.from_env(
        {"JACKPOT_LOG_DIR": "/var/log/j", "JACKPOT_BACKUP_DIR": "/b", "JACKPOT_DATA_DIR": "/d"}
    )
    assert (chosen.process.log_dir, chosen.database.backup_dir, chosen.database.data_dir) == (
        Path("/var/log/j"),
        Path("/b"),
        Path("/d"),
    )


# Modules that still read the source checkout at run time, each with what replaces it.
STILL_READING_THE_CHECKOUT: dict[str, str] = {}


def test_no_run_time_module_reads_the_source_checkout() -> None:
    """The checkout's root is testkit.paths.PROJECT_ROOT: no module of the package names it."""
    package = Path(cli.__file__).parent
    readers = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "PROJECT_ROOT" in path.read_text()
    }
    assert readers <= set(STILL_READING_THE_CHECKOUT), readers
