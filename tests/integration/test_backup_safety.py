"""Backups an operator can trust, against real PostgreSQL and the real client tools: the
pre-deployment backup of a database at an older revision (or of a first deploy's empty one)
is made and verified against its own revision; `verify` reads the whole archive and its
sha256 manifest; a dump that fails verification is kept, marked; `prune` never deletes the
newest verified backups and refuses a directory that holds none; files are 0600 whatever
the umask."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jackpot_grpc.adapters import migrations
from jackpot_grpc.adapters.database import connect_ops
from jackpot_grpc.config import Settings
from jackpot_grpc.ops import backup, pgstat
from jackpot_grpc.ops.cli import backup as backup_cli
from testkit.database import scratch_database
from testkit.ops_commands import ops_json_sync

OLDER_REVISION = "0006"  # before 0007 added ledger_audits
UNDER_UMASK_022 = ("sh", "-c", 'umask 022 && exec "$@"', "sh")


@pytest.fixture
def older_database(admin_url: str) -> Iterator[str]:
    with scratch_database(admin_url, "jackpot_old") as url:
        migrations.upgrade(url, OLDER_REVISION)
        yield url


@pytest.fixture
def empty_database(admin_url: str) -> Iterator[str]:
    with scratch_database(admin_url, "jackpot_empty") as url:
        yield url


def _create(settings: Settings, url: str, root: Path, *extra: str) -> tuple[int, dict[str, object]]:
    code, data = ops_json_sync(
        dataclasses.replace(settings, database=dataclasses.replace(settings.database, url=url)),
        "backup",
        "create",
        "--dir",
        str(root),
        *extra,
    )
    assert isinstance(data, dict)
    return code, data


def test_a_database_at_an_older_revision_backs_up_and_verifies(
    settings: Settings, older_database: str, tmp_path: Path
) -> None:
    code, created = _create(settings, older_database, tmp_path)
    assert code == 0, created
    assert created["revision"] == OLDER_REVISION
    file = Path(str(created["file"]))
    assert file.is_file()
    code, verified = ops_json_sync(settings, "backup", "verify", str(file))
    assert code == 0, verified
    assert verified["revision"] == OLDER_REVISION and verified["read_whole"]
    assert verified["checksum"] == "ok"
    assert "ledger_audits" not in verified["table_data"]  # not there at 0006, not required
    assert set(backup.required_tables(OLDER_REVISION)) <= set(verified["table_data"])


def test_a_first_deploy_database_backs_up(
    settings: Settings, empty_database: str, tmp_path: Path
) -> None:
    code, created = _create(settings, empty_database, tmp_path)
    assert code == 0, created
    assert created["revision"] is None
    code, verified = ops_json_sync(settings, "backup", "verify", str(created["file"]))
    assert code == 0 and verified["missing"] == []


def test_a_truncated_dump_fails_verify(ops_settings: Settings, tmp_path: Path) -> None:
    code, created = ops_json_sync(ops_settings, "backup", "create", "--dir", str(tmp_path))
    assert code == 0
    whole = Path(created["file"]).read_bytes()
    # The table of contents comes first, the data after it: cut into the last table's data
    # (a copy that stopped early). Without a manifest, only reading the data can tell.
    halved = tmp_path / "truncated.dump"
    halved.write_bytes(whole[: len(whole) - 64])
    code, data = ops_json_sync(ops_settings, "backup", "verify", str(halved))
    assert code == 1 and data["ok"] is False
    assert "does not read to the end" in data["error"], data
    # The table of contents alone still lists every table: what --list used to accept.
    assert data["entries"] > 0


def test_a_dump_that_differs_from_its_manifest_fails_verify(
    ops_settings: Settings, tmp_path: Path
) -> None:
    code, created = ops_json_sync(ops_settings, "backup", "create", "--dir", str(tmp_path))
    assert code == 0
    file = Path(created["file"])
    manifest = Path(created["manifest"])
    assert manifest.read_text().split() == [backup.sha256_of(file), file.name]
    assert subprocess.run(["sha256sum", "-c", manifest.name], cwd=file.parent).returncode == 0
    with file.open("ab") as extended:  # pg_restore reads past trailing bytes; sha256 does not
        extended.write(b"\0")
    code, data = ops_json_sync(ops_settings, "backup", "verify", str(file))
    assert code == 1 and "does not match the manifest" in data["error"]


def _failing_reader(directory: Path, real: Path) -> Path:
    """A pg_restore that lists like the real one but fails to read the data through: a
    dump whose data blocks are damaged on the way to the disk."""
    directory.mkdir()
    tool = directory / "pg_restore"
    tool.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do [ "$arg" = "--file=/dev/null" ] &&'
        ' { echo "pg_restore: error: could not read input file" >&2; exit 1; }; done\n'
        f'exec {real} "$@"\n'
    )
    tool.chmod(0o755)
    return directory


def test_a_backup_that_fails_verification_is_kept_marked_unverified(
    ops_settings: Settings, database_url: str, tmp_path: Path
) -> None:
    with connect_ops(database_url) as conn:
        major = pgstat.server_major(conn)
    real = backup.find_tool("pg_restore", major).path
    bin_dir = _failing_reader(tmp_path / "bin", real)
    root = tmp_path / "backups"
    code, data = ops_json_sync(
        ops_settings, "backup", "create", "--dir", str(root), "--pg-bin-dir", str(bin_dir)
    )
    assert code == 1 and "does not read to the end" in data["error"]
    (kept,) = root.glob("*/*")
    assert kept.name.endswith(".dump.unverified") and kept.stat().st_size > 0
    assert str(kept) in data["error"]
    # Never counted as a verified backup.
    code, data = ops_json_sync(ops_settings, "backup", "prune", "--dir", str(root))
    assert code == 1 and "holds no verified backup" in data["error"]


def _aged(path: Path, days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text("x")
    when = time.time() - days * 86400
    os.utime(path, (when, when))
    return path


def _dump_file(root: Path, day: int, days_old: float) -> Path:
    stamp = f"202001{day:02d}"
    dump = _aged(root / f"2020-01-{day:02d}" / f"jackpot_full_backup_{stamp}_000000.dump", days_old)
    _aged(dump.with_name(dump.name + ".sha256"), days_old)
    return dump


def test_prune_keeps_the_only_backup_however_old(ops_settings: Settings, tmp_path: Path) -> None:
    only = _dump_file(tmp_path, 1, 400)
    code, data = ops_json_sync(
        ops_settings, "backup", "prune", "--dir", str(tmp_path), "--older-than-days", "30"
    )
    assert code == 0, data
    assert data["files"] == [] and only.exists()
    assert [Path(k) for k in data["kept"]] == [only]


def test_prune_keeps_the_newest_verified_and_deletes_older(
    ops_settings: Settings, tmp_path: Path
) -> None:
    dumps = [_dump_file(tmp_path, day, 100 - day) for day in range(1, 6)]  # day 5 newest
    stray = _aged(tmp_path / "2020-01-01" / "jackpot_schema_20200101_000000.sql", 99)
    code, data = ops_json_sync(ops_settings, "backup", "prune", "--dir", str(tmp_path))
    assert code == 0, data
    assert [Path(k) for k in data["kept"]] == dumps[2:]
    deleted = {Path(f["file"]) for f in data["files"]}
    assert deleted == {
        *dumps[:2],
        *(d.with_name(d.name + ".sha256") for d in dumps[:2]),
        stray,
    }
    assert all(d.exists() for d in dumps[2:]) and not any(d.exists() for d in dumps[:2])

    code, data = ops_json_sync(
        ops_settings, "backup", "prune", "--dir", str(tmp_path), "--keep", "1"
    )
    assert code == 0 and [Path(k) for k in data["kept"]] == dumps[4:]
    assert not dumps[2].exists() and dumps[4].exists()


@pytest.mark.parametrize("layout", ["missing", "no backups"])
def test_prune_fails_on_a_directory_without_backups(
    ops_settings: Settings, tmp_path: Path, layout: str
) -> None:
    root = tmp_path / "backupz"
    if layout == "no backups":
        _aged(root / "2020-01-01" / "notes.txt", 400)
    code, data = ops_json_sync(ops_settings, "backup", "prune", "--dir", str(root))
    assert code == 1 and data["ok"] is False
    assert str(root) in data["error"] and "nothing deleted" in data["error"]
    if layout == "no backups":
        assert (root / "2020-01-01" / "notes.txt").exists()


def test_backups_are_private_under_umask_022(database_url: str, tmp_path: Path) -> None:
    root = tmp_path / "backups"
    done = subprocess.run(
        [
            *UNDER_UMASK_022,
            sys.executable,
            "-m",
            "jackpot_grpc.cli",
            "backup",
            "create",
            "--with-sql",
        ],
        env={**os.environ, "DATABASE_URL": database_url, "JACKPOT_BACKUP_DIR": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    files = sorted(root.glob("*/*"))
    assert {f.suffix for f in files} == {".dump", ".sha256", ".sql"}
    modes = {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files}
    assert set(modes.values()) == {"0o600"}, modes


def test_the_cli_default_keep_is_the_module_default() -> None:
    assert backup_cli.DEFAULT_KEEP == backup.DEFAULT_KEEP
