"""Issue 16: the runbook's procedures as an operator runs them, against real PostgreSQL and
real processes: migrate's dry run asks the database, start failures reach the log,
backups hold every table, config validation reports everything, memory is of the limit."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import psycopg
import pytest

from jackpot_grpc.adapters import migrations
from jackpot_grpc.adapters.database import connect_ops
from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer
from jackpot_grpc.ops import backup, diagnostics, pgstat
from jackpot_grpc.runtime.cgroup_memory import memory_limit, memory_percent
from testkit.database import create_database, drop_database, public_tables, unique_name
from testkit.ops_commands import ops_json_sync, run_ops
from testkit.outage import database_outage
from testkit.ports import free_port
from testkit.processes import serve_process


def jackpot(
    *argv: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jackpot_grpc.cli", *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- 1. migrate --dry-run asks the database ------------------------------------------------


def test_dry_run_on_a_database_at_head_has_nothing_pending(database_url: str) -> None:
    done = jackpot("migrate", "--dry-run", env={"DATABASE_URL": database_url})
    assert done.returncode == 0, done.stderr
    assert "no pending migrations" in done.stdout
    assert "CREATE TABLE" not in done.stdout


def test_dry_run_prints_only_the_pending_revisions(admin_url: str) -> None:
    name = unique_name("jackpot_pending")
    url = create_database(admin_url, name)
    try:
        migrations.upgrade(url, "0001")
        done = jackpot("migrate", "--dry-run", env={"DATABASE_URL": url})
        assert done.returncode == 0, done.stderr
        assert "CREATE TABLE jackpots" not in done.stdout  # 0001 is applied already
        assert "CREATE TABLE system_metrics" in done.stdout
        assert "CREATE TABLE contribution_totals" in done.stdout
        assert migrations.current_revision(url) == "0001"  # changed nothing

        applied = jackpot("migrate", "--json", env={"DATABASE_URL": url})
        assert applied.returncode == 0, applied.stderr
        report = json.loads(applied.stdout)
        head = pgstat.head_revision()
        assert head is not None
        expected = [f"{n:04d}" for n in range(2, int(head) + 1)]
        assert [r["revision"] for r in report["applied"]] == expected
        assert report["before"] == "0001" and report["current"] == pgstat.head_revision()

        again = jackpot("migrate", env={"DATABASE_URL": url})
        assert again.returncode == 0 and "nothing to apply" in again.stdout
    finally:
        drop_database(admin_url, name)


def test_dry_run_fails_clearly_when_the_database_is_unreachable() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    done = jackpot("migrate", "--dry-run", "--timeout", "2", env={"DATABASE_URL": url})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: database error:")
    assert "Traceback" not in done.stderr
    assert "CREATE TABLE" not in done.stdout


def test_migrate_to_a_revision_moves_down_and_back_up(admin_url: str) -> None:
    name = unique_name("jackpot_updown")
    url = create_database(admin_url, name)
    env = {"DATABASE_URL": url}
    head = pgstat.head_revision()
    try:
        up = jackpot("migrate", "--json", env=env)
        assert up.returncode == 0, up.stderr
        assert json.loads(up.stdout)["current"] == head
        dry = jackpot("migrate", "--to", "0006", "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert "DROP TABLE ledger_audits" in dry.stdout
        assert migrations.current_revision(url) == head  # a dry run changes nothing

        down = jackpot("migrate", "--to", "0006", "--json", env=env)
        assert down.returncode == 0, down.stderr
        report = json.loads(down.stdout)
        assert report["direction"] == "down" and report["current"] == "0006"
        # Every revision above 0006, newest first.
        assert head is not None
        above = [f"{n:04d}" for n in range(int(head), 6, -1)]
        assert [r["revision"] for r in report["applied"]] == above
        assert "Running downgrade 0008 -> 0007" in down.stderr
        assert migrations.current_revision(url) == "0006"
        assert "ledger_audits" not in public_tables(url)
        with connect_ops(url) as conn:
            columns = pgstat.rows(
                conn,
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'contributions' AND column_name = 'client'",
            )
        assert columns == []

        again = jackpot("migrate", "--json", env=env)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["current"] == head
        assert "ledger_audits" in public_tables(url)

        unknown = jackpot("migrate", "--to", "0099", env=env)
        assert unknown.returncode == 1 and "unknown revision '0099'" in unknown.stderr
        assert migrations.current_revision(url) == head
    finally:
        drop_database(admin_url, name)


# --- 2. start failures in application.log; errors across rotated logs -------------------


def _logged_errors(log_dir: Path) -> list[str]:
    text = (log_dir / "application.log").read_text()
    return [line for line in text.splitlines() if " ERROR " in line]


def test_a_port_in_use_is_logged_before_exit(database_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = jackpot(
            "serve",
            "--no-migrate",
            env={
                "DATABASE_URL": database_url,
                "GRPC_HOST": "127.0.0.1",
                "GRPC_PORT": str(port),
                "HEALTH_HOST": "127.0.0.1",
                "HEALTH_PORT": "0",
                "JACKPOT_LOG_DIR": str(tmp_path),
            },
        )
    assert done.returncode != 0
    errors = _logged_errors(tmp_path)
    assert errors and "failed" in errors[-1] and str(port) in errors[-1], errors
    found = diagnostics.recent_log_errors(tmp_path / "application.log")
    assert found["errors"] == len(errors) >= 1


def test_a_database_that_does_not_answer_is_logged_and_the_server_stays_up(
    tmp_path: Path,
) -> None:
    """Started without its database the server does not exit (a restart during an outage
    must not crash-loop: tests/e2e/test_start_without_database.py); it logs why it is not
    serving, where `grep ERROR` and `jackpot diagnostics` find it."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    process = serve_process(url, tmp_path)
    try:
        process.launch()
        process.wait_until(
            lambda: any("started without the database" in e for e in _errors_so_far(tmp_path)),
            30.0,
            "logging the missing database",
        )
        assert process.alive()
    finally:
        process.stop()
    errors = _logged_errors(tmp_path)
    assert any("OperationalError" in e and "NOT_SERVING" in e for e in errors), errors


def _errors_so_far(log_dir: Path) -> list[str]:
    return _logged_errors(log_dir) if (log_dir / "application.log").exists() else []


def test_a_bad_setting_is_logged(tmp_path: Path) -> None:
    done = jackpot("serve", env={"GRPC_PORT": "fifty", "JACKPOT_LOG_DIR": str(tmp_path)})
    assert done.returncode != 0
    errors = _logged_errors(tmp_path)
    assert errors and "GRPC_PORT must be an integer" in errors[-1], errors


def test_diagnostics_counts_errors_in_rotated_logs(tmp_path: Path) -> None:
    now = datetime.now()
    stamp = (now - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    old = (now - timedelta(hours=30)).strftime("%Y-%m-%d %H:%M:%S")

    def line(when: str, level: str) -> str:
        return f"{when},000 {level} [x] trace=- something\n"

    (tmp_path / "application.log").write_text(line(stamp, "ERROR") + line(stamp, "INFO"))
    (tmp_path / "application.log.1").write_text(line(stamp, "ERROR") + line(old, "ERROR"))
    with gzip.open(tmp_path / "application.log.2.gz", "wt") as packed:
        packed.write(line(stamp, "CRITICAL") + line(stamp, "WARNING"))
    ancient = tmp_path / "application.log.3.gz"
    with gzip.open(ancient, "wt") as packed:
        packed.write(line(stamp, "ERROR"))  # the file was last written long ago
    week_ago = (now - timedelta(days=7)).timestamp()
    os.utime(ancient, (week_ago, week_ago))

    found = diagnostics.recent_log_errors(tmp_path / "application.log", hours=24, now=now)
    assert found["errors"] == 3
    assert found["files_read"] == 3


# --- 3. backups hold every table; a restore that cannot finish leaves nothing -----------


def _dump(url: str, file: Path, *extra: str) -> None:
    with connect_ops(url) as conn:
        major = pgstat.server_major(conn)
    tool = backup.find_tool("pg_dump", major)
    subprocess.run(
        [str(tool.path), f"--dbname={url}", "--format=custom", f"--file={file}", *extra],
        check=True,
        capture_output=True,
    )


def _database_exists(admin_url: str, name: str) -> bool:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def test_required_tables_are_the_schema_tables() -> None:
    assert "contribution_totals" in backup.required_tables()
    assert set(backup.required_tables()) == set(migrations.schema_tables())


def test_a_dump_without_contribution_totals_is_refused(
    ops_settings: Settings, database_url: str, admin_url: str, tmp_path: Path
) -> None:
    file = tmp_path / "partial.dump"
    _dump(database_url, file, "--exclude-table-data=contribution_totals")
    code, data = ops_json_sync(ops_settings, "backup", "verify", str(file))
    assert code == 1 and data["missing"] == ["contribution_totals"]

    target = unique_name("jackpot_restore")
    code, _ = run_ops(ops_settings, "backup", "restore", str(file), "--database", target)
    assert code == 1
    assert not _database_exists(admin_url, target)


def test_a_restore_whose_books_cannot_be_audited_drops_what_it_made(
    ops_settings: Settings,
    database_url: str,
    admin_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Every table's data is there, but the totals row is gone: the audit cannot run.
    with connect_ops(database_url) as conn:
        conn.execute("DELETE FROM contribution_totals")
    file = tmp_path / "no-totals.dump"
    _dump(database_url, file)
    target = unique_name("jackpot_restore")
    try:
        code, _ = run_ops(ops_settings, "backup", "restore", str(file), "--database", target)
        err = capsys.readouterr().err
        assert code == 1
        assert "cannot be audited" in err and "was dropped; nothing is left" in err
        assert "Traceback" not in err
        assert not _database_exists(admin_url, target)
    finally:
        drop_database(admin_url, target)


def test_backup_create_shows_progress_unless_json(
    ops_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_ops(ops_settings, "backup", "create", "--dir", str(tmp_path / "a"))
    assert code == 0 and "backup:" in capsys.readouterr().err
    code, out = run_ops(ops_settings, "backup", "create", "--dir", str(tmp_path / "b"), "--json")
    assert code == 0 and json.loads(out)["ok"]
    assert capsys.readouterr().err == ""


def test_backup_dir_is_one_setting(ops_settings: Settings, tmp_path: Path) -> None:
    # Default ./backups where the command runs; units and the image set /var/backups/jackpot.
    assert Settings.from_env({}).database.backup_dir == Path("backups").absolute()
    configured = Settings.from_env({"JACKPOT_BACKUP_DIR": str(tmp_path)})
    assert configured.database.backup_dir == tmp_path
    code, data = ops_json_sync(
        dataclasses.replace(
            ops_settings, database=dataclasses.replace(ops_settings.database, backup_dir=tmp_path)
        ),
        "backup",
        "create",
    )
    assert code == 0 and Path(data["file"]).is_relative_to(tmp_path)


def test_db_maintain_reports_each_table_as_it_goes(
    ops_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_ops(ops_settings, "db", "maintain", "--reindex")
    err = capsys.readouterr().err
    assert code == 0
    tables = pgstat.schema_tables()
    assert f"maintain: REINDEX CONCURRENTLY {tables[0]} (1/{len(tables)})" in err
    assert f"maintain: VACUUM ANALYZE {tables[-1]} ({len(tables)}/{len(tables)})" in err


# --- 4. config validate reports every violation at once -------------------------------------


def test_config_validate_reports_all_violations_at_once(
    ops_settings: Settings, tmp_path: Path
) -> None:
    file = tmp_path / "config.json"
    file.write_text(
        json.dumps(
            {
                "pools": [
                    # A bad rate and a cap below the seed: both are reported.
                    {
                        "group": "minor",
                        "contribution_rate": "abc",
                        "seed_amount": 100,
                        "max_amount": 50,
                    },
                    {"group": "major", "contribution_rate": "0.003", "seed_amount": 0},
                ]
            }
        )
    )
    code, data = ops_json_sync(ops_settings, "config", "validate", str(file))
    assert code == 1
    assert {v["field"] for v in data["violations"]} == {
        "pools.minor.contribution_rate",
        "pools.minor.max_amount",
        "pools.major.seed_amount",
        "pools.mega",  # missing, reported beside the rest
    }


# --- 9. memory against the cgroup's limit ----------------------------------------------------


def _proc(tmp_path: Path, cgroup: str) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup)
    return proc


def test_memory_limit_of_cgroup_v2_and_v1(tmp_path: Path) -> None:
    root = tmp_path / "v2"
    (root / "system.slice" / "jackpot.service").mkdir(parents=True)
    (root / "system.slice" / "jackpot.service" / "memory.max").write_text("1073741824\n")
    (root / "memory.max").write_text("max\n")
    proc = _proc(tmp_path / "a", "0::/system.slice/jackpot.service\n")
    assert memory_limit(root=root, proc=proc) == 1 << 30
    assert memory_limit(root=root, proc=_proc(tmp_path / "b", "0::/\n")) is None

    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("536870912\n")
    proc = _proc(tmp_path / "c", "4:memory:/docker/abc\n0::/\n")
    assert memory_limit(root=v1, proc=proc) == 512 << 20  # a container: the mount's root
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory_limit(root=v1, proc=proc) is None

    assert memory_percent(256 << 20, 512 << 20) == pytest.approx(50.0)


# --- 8. smoke targets exactly what it is told; 9. health goes red on unbalanced books -------


def test_smoke_refuses_a_grpc_target_without_its_health_url(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # DATABASE_URL set or not, smoke tests the instance it names (the deploy shell:
    # tests/integration/test_smoke_deploy_shell.py); another host's health port is not guessed.
    code, _ = run_ops(settings, "smoke", "--grpc-target", "green:50052")
    assert code == 1
    assert "green:50052 is not this host's instance" in capsys.readouterr().err


async def test_health_is_red_when_the_books_do_not_balance(
    server: RunningServer, ops_settings: Settings, database_url: str
) -> None:
    with connect_ops(database_url) as conn:
        conn.execute("UPDATE jackpots SET current_amount = current_amount + 5 WHERE lock_order = 0")
    assert server.auditor is not None
    # An on-demand audit within its minimum interval of an earlier one (another test's, on
    # this module's server) answers that earlier verdict, from before the edit: wait for
    # one that ran after it (bounded by the interval).
    deadline = time.monotonic() + 15
    while (await server.auditor.audit_now()).how == "recent":
        assert time.monotonic() < deadline, "no audit ran after the edit"
        await asyncio.sleep(0.5)
    argv = ("health", "--grpc-target", f"127.0.0.1:{server.port}")
    base = f"http://127.0.0.1:{server.health_port}"
    code, out = await asyncio.to_thread(
        run_ops, ops_settings, *argv, "--health-url", base, "--json"
    )
    data = json.loads(out)
    assert code == 1 and data["healthy"] is False
    books = next(c for c in data["checks"] if c["check"] == "books")
    assert books["status"] == "UNBALANCED" and "minor off by 5" in books["detail"]


async def test_health_shows_no_stale_books_verdict_while_the_database_is_down(
    server: RunningServer, ops_settings: Settings, database_url: str, admin_url: str
) -> None:
    assert server.auditor is not None
    await server.auditor.audit_now()  # balanced, a moment ago
    argv = ("health", "--grpc-target", f"127.0.0.1:{server.port}")
    base = f"http://127.0.0.1:{server.health_port}"
    async with database_outage(admin_url, database_url), aiohttp.ClientSession() as http:
        for _ in range(100):  # the pools' snapshot expires, then reads fail (bounded: 10 s)
            async with http.get(f"{base}/health/jackpot") as response:
                if response.status == 503:
                    break
            await asyncio.sleep(0.1)
        code, out = await asyncio.to_thread(
            run_ops, ops_settings, *argv, "--health-url", base, "--json"
        )
    data = json.loads(out)
    assert code == 1
    books = next(c for c in data["checks"] if c["check"] == "books")
    # The last verdict is old news while the ledger cannot be read: unknown, with its age.
    assert books["status"] == "UNKNOWN" and not books["healthy"], books
    assert "last audit balanced" in books["detail"] and " s ago" in books["detail"]


# --- 7. loadtest against a running service; make test-load, make security-audit ----------


async def test_loadtest_drives_a_running_service(
    server: RunningServer, ops_settings: Settings, database_url: str
) -> None:
    argv = ("loadtest", "--grpc-target", f"127.0.0.1:{server.port}")
    timing = ("--duration", "1", "--warmup", "0.2", "--concurrency", "8")
    code, out = await asyncio.to_thread(
        run_ops, ops_settings, *argv, *timing, "--rate", "40", "--json"
    )
    data = json.loads(out)
    assert code == 0, data
    (load,) = data["loads"]
    assert load["load"] == "contribute" and 20 <= load["calls"] <= 60  # ~40/s for 1 s
    assert load["p50_ms"] is not None and load["p95_ms"] >= load["p50_ms"]
    assert load["p99_ms"] >= load["p95_ms"] and data["errors"] == []
    with connect_ops(database_url) as conn:
        keyed = pgstat.one(
            conn,
            "SELECT count(*) AS n, count(DISTINCT idempotency_key) AS keys FROM contributions"
            " WHERE game_id = 'loadtest'",
        )
    assert keyed["n"] == keyed["keys"] >= load["calls"]  # every call its own key

    closed = ("--duration", "0.5", "--warmup", "0", "--concurrency", "2")
    code, text = await asyncio.to_thread(
        run_ops, ops_settings, *argv, *closed, "--kind", "get_pools"
    )
    assert code == 0 and "p95_ms" in text and "load test passed" in text


def test_loadtest_fails_on_errors(ops_settings: Settings) -> None:
    dead = f"127.0.0.1:{free_port()}"
    code, data = ops_json_sync(
        ops_settings,
        "loadtest",
        "--grpc-target",
        dead,
        "--duration",
        "0.3",
        "--warmup",
        "0",
        "--concurrency",
        "1",
        "--timeout",
        "1",
    )
    assert code == 1 and data["ok"] is False


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            "test-load",
            "jackpot loadtest --grpc-target green:50052 --duration 30 --kind get_pools --rate 200",
        ),
        # --strict: a dependency it could not audit (no network, not on PyPI) fails the
        # target; without it, an audit of nothing said "No known vulnerabilities found", exit 0.
        ("security-audit", "pip-audit --skip-editable --strict"),
    ],
)
def test_make_targets(target: str, expected: str) -> None:
    done = subprocess.run(
        ["make", "-n", target, "TARGET=green:50052", "RATE=200"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert expected in " ".join(done.stdout.replace("\\\n", " ").split())
