"""The operator commands (jackpot_grpc.ops.cli) against a real server on real PostgreSQL.

Each command runs as `jackpot` would run it: parsed by argparse, given a Settings, printing
to stdout; in a worker thread, because commands run their own event loop while the server
fixture serves on the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import yaml
from aiohttp import web
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.adapters import migrations
from jackpot_grpc.adapters.database import connect_ops
from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from jackpot_grpc.ops import backup, pgstat
from jackpot_grpc.service.reports import run_audit
from testkit.database import create_database, drop_database, public_tables, unique_name
from testkit.ops_commands import ops, ops_json, ops_json_sync
from testkit.paths import PROJECT_ROOT
from testkit.ports import free_port

Stub = jackpot_pb2_grpc.JackpotServiceStub
GROUPS = ["minor", "major", "mega"]


def grpc_target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


def health_base(server: RunningServer) -> str:
    return f"http://127.0.0.1:{server.health_port}"


def leftovers(root: Path) -> list[Path]:
    return list(root.rglob("*.partial"))


async def contribute(stub: Stub, wager: int = 1000) -> pb.ContributeResponse:
    reply: pb.ContributeResponse = await stub.Contribute(
        pb.ContributeRequest(
            game_id="ops-test", wager_amount=wager, idempotency_key=uuid.uuid4().hex
        )
    )
    return reply


# --- health and smoke --------------------------------------------------------------------


async def test_health_is_healthy_over_grpc_and_http(
    server: RunningServer, ops_settings: Settings
) -> None:
    code, data = await ops_json(
        ops_settings,
        "health",
        "--grpc-target",
        grpc_target(server),
        "--health-url",
        health_base(server),
    )
    assert code == 0
    assert data["healthy"] is True
    statuses = {c["check"]: c["status"] for c in data["checks"]}
    assert statuses.pop("books") in ("BALANCED", "NOT AUDITED YET")
    assert statuses == {
        "grpc health (server)": "SERVING",
        "grpc health jackpot.v1.JackpotService": "SERVING",
        "http health": "HTTP 200",
    }

    code, text = await ops(
        ops_settings, "health", "--grpc-target", grpc_target(server), "--grpc-only"
    )
    assert code == 0
    assert "SERVING" in text and "http health" not in text


async def test_health_reports_refused_connections_as_unhealthy(
    server: RunningServer, ops_settings: Settings
) -> None:
    dead = free_port()
    code, data = await ops_json(
        ops_settings,
        "health",
        "--grpc-target",
        grpc_target(server),
        "--health-url",
        f"http://127.0.0.1:{dead}",
    )
    assert code == 1
    http = next(c for c in data["checks"] if c["check"] == "http health")
    assert http["status"] == "UNREACHABLE" and http["detail"] == "connection refused"
    assert all(c["healthy"] for c in data["checks"] if c["check"] not in ("http health", "books"))

    code, text = await ops(
        ops_settings,
        "health",
        "--grpc-target",
        f"127.0.0.1:{dead}",
        "--grpc-only",
        "--timeout",
        "2",
    )
    assert code == 1
    assert "UNREACHABLE" in text and "UNHEALTHY" in text


def smoke_argv(server: RunningServer, *more: str) -> tuple[str, ...]:
    return (
        "smoke",
        "--grpc-target",
        grpc_target(server),
        "--health-url",
        health_base(server),
        *more,
    )


async def test_smoke_write_moves_money_and_leaves_the_books_balanced(
    server: RunningServer, settings: Settings, ops_settings: Settings, database_url: str
) -> None:
    # The shell's own database is unreachable: the service audits the books it writes.
    elsewhere = dataclasses.replace(
        settings,
        database=dataclasses.replace(
            settings.database, url=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
        ),
    )
    code, data = await ops_json(elsewhere, *smoke_argv(server, "--write"))
    assert code == 0, data
    assert [s["step"] for s in data["steps"]] == [
        "read pools",
        "contribute",
        "replay contribution",
        "pools moved",
        "win minor",
        "replay win",
        "audit books",
    ]
    assert all(s["ok"] for s in data["steps"])
    audit = data["steps"][-1]["detail"]
    assert audit.startswith("books balance: minor=") and "major=" in audit and "mega=" in audit
    assert f"{health_base(server)}/health/jackpot?audit=now" in audit

    books = await run_audit(ops_settings, database_url)
    assert books.balanced, books.problems()
    with connect_ops(database_url) as conn:
        counts = pgstat.one(
            conn,
            """SELECT
                 (SELECT count(*) FROM contributions WHERE game_id = 'smoke-test') AS c,
                 (SELECT count(*) FROM wins WHERE game_id = 'smoke-test' AND amount = 1) AS w""",
        )
    assert counts == {"c": 1, "w": 1}  # the replays changed nothing


def test_smoke_fails_when_the_service_is_not_there(ops_settings: Settings) -> None:
    dead = free_port()
    code, data = ops_json_sync(
        ops_settings,
        "smoke",
        "--grpc-target",
        f"127.0.0.1:{dead}",
        "--health-url",
        f"http://127.0.0.1:{dead}",
        "--timeout",
        "2",
    )
    assert code == 1
    assert data["ok"] is False
    assert data["steps"][0]["ok"] is False
    # The audit is the service's: no service, no audit, even with the database reachable.
    audit = data["steps"][-1]
    assert audit["step"] == "audit books" and audit["ok"] is False
    assert audit["detail"] == (
        f"cannot reach http://127.0.0.1:{dead}/health/jackpot?audit=now: connection refused"
    )


async def test_smoke_audit_fails_when_the_service_books_do_not_balance(
    server: RunningServer, ops_settings: Settings, database_url: str
) -> None:
    with connect_ops(database_url) as conn:
        conn.execute("UPDATE jackpots SET current_amount = current_amount + 9 WHERE lock_order = 0")

    code, data = await ops_json(ops_settings, *smoke_argv(server, "--write"))
    assert code == 1 and data["ok"] is False
    *money, audit = data["steps"]
    assert all(s["ok"] for s in money), money  # the money moved; only the books are wrong
    assert audit["step"] == "audit books" and audit["ok"] is False
    # The pool sums name the pool; the chain names the first row written on the bad amount.
    assert audit["detail"].startswith("BOOKS DO NOT BALANCE: minor off by 9, contributions #")

    code, text = await ops(ops_settings, *smoke_argv(server))
    assert code == 1
    assert "BOOKS DO NOT BALANCE: minor off by 9" in text and "SMOKE TEST FAILED" in text

    code, data = await ops_json(ops_settings, *smoke_argv(server, "--no-audit"))
    assert code == 0 and "audit books" not in [s["step"] for s in data["steps"]]

    # The pool put back: its sums balance again, but the rows written while it was 9 too
    # high record that amount, and the chain names them for good.
    with connect_ops(database_url) as conn:
        conn.execute("UPDATE jackpots SET current_amount = current_amount - 9 WHERE lock_order = 0")
    code, data = await ops_json(ops_settings, *smoke_argv(server))
    assert code == 1, data
    detail = data["steps"][-1]["detail"]
    assert "off by" not in detail and "contributions #" in detail


def test_smoke_audits_under_the_health_base_url() -> None:
    from jackpot_grpc.ops.smoke import audit_url

    expected = "http://host:3001/health/jackpot?audit=now"
    for base in (
        "http://host:3001",
        "http://host:3001/",
        "host:3001",
        "http://host:3001/health",
        "http://host:3001/health/jackpot",
    ):
        assert audit_url(base) == expected, base


# --- database ----------------------------------------------------------------------------


def test_db_check_reports_version_latency_and_revision(
    ops_settings: Settings, admin_url: str, settings: Settings
) -> None:
    code, data = ops_json_sync(ops_settings, "db", "check")
    assert code == 0
    assert data["connected"] and data["up_to_date"]
    assert data["revision"] == data["head_revision"] == pgstat.head_revision()
    assert data["server_version_num"] >= 130000
    assert data["latency_ms"] >= 0

    name = unique_name("jackpot_empty")
    url = create_database(admin_url, name)
    try:
        code, data = ops_json_sync(
            dataclasses.replace(settings, database=dataclasses.replace(settings.database, url=url)),
            "db",
            "check",
        )
        assert code == 1
        assert data["revision"] is None and data["up_to_date"] is False
    finally:
        drop_database(admin_url, name)

    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    code, data = ops_json_sync(
        dataclasses.replace(
            settings, database=dataclasses.replace(settings.database, url=unreachable)
        ),
        "db",
        "check",
        "--timeout",
        "2",
    )
    assert code == 1 and data["connected"] is False


async def test_db_pool_status_counts_the_service_connections(
    server: RunningServer, ops_settings: Settings
) -> None:
    code, data = await ops_json(
        ops_settings, "db", "pool-status", "--health-url", health_base(server)
    )
    assert code == 0, data
    # The server's pool (application_name jackpot-service) holds at least min_size open.
    assert sum(s["connections"] for s in data["states"]) >= ops_settings.database.pool_min_size
    assert data["usage"]["max_connections"] > 0
    assert data["usage"]["jackpot_connections"] >= ops_settings.database.pool_min_size

    code, text = await ops(
        ops_settings, "db", "pool-status", "--health-url", health_base(server), "--fail-above", "0"
    )
    assert code == 1
    assert "ABOVE 0" in text


async def test_db_pool_status_reports_the_servers_own_pool(
    settings: Settings, database_url: str
) -> None:
    # The server runs with DB_POOL_MAX=2; the command's own settings say 8 (the fixture's).
    small = dataclasses.replace(
        settings, database=dataclasses.replace(settings.database, pool_min_size=1, pool_max_size=2)
    )
    running = await start_server(small, database_url, port=0)
    try:
        ops_settings = dataclasses.replace(
            settings, database=dataclasses.replace(settings.database, url=database_url)
        )
        argv = ("db", "pool-status", "--health-url", health_base(running))
        code, data = await ops_json(ops_settings, *argv)
        assert code == 0, data
        assert data["service_pool"]["max_size"] == 2
        # Saturated: both connections taken.
        async with running.db_pool.connection(), running.db_pool.connection():
            code, data = await ops_json(ops_settings, *argv)
        assert code == 1, data
        pool = data["service_pool"]
        assert (pool["max_size"], pool["in_use"], pool["utilization_percent"]) == (2, 2, 100.0)
        assert any(p.startswith("service pool") for p in data["problems"]), data["problems"]

        # A server that does not answer: the pool is unknown, which is a failure.
        down = ("db", "pool-status", "--health-url", f"http://127.0.0.1:{free_port()}")
        code, data = await ops_json(ops_settings, *down)
        assert code == 1 and "error" in data["service_pool"]
    finally:
        await running.stop(grace=1.0)


def test_migrate_dry_run_prints_sql_and_changes_nothing(admin_url: str) -> None:
    name = unique_name("jackpot_dry")
    url = create_database(admin_url, name)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "jackpot_grpc.cli", "migrate", "--dry-run"],
            env={**os.environ, "DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "CREATE TABLE jackpots" in done.stdout
        assert "INSERT INTO alembic_version" in done.stdout
        with connect_ops(url) as conn:
            tables = pgstat.rows(
                conn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        assert tables == []
    finally:
        drop_database(admin_url, name)


def test_db_maintain_and_long_queries(ops_settings: Settings, database_url: str) -> None:
    code, data = ops_json_sync(ops_settings, "db", "maintain")
    assert code == 0
    # Every table the database holds, the hottest (contribution_totals) included.
    assert {a["table"] for a in data["actions"]} == public_tables(database_url)
    assert "contribution_totals" in {t["table"] for t in data["tables"]}

    sleeper = psycopg.connect(database_url, autocommit=True, application_name="ops-test-sleeper")
    errors: list[BaseException] = []

    def sleep() -> None:
        try:
            sleeper.execute("SELECT pg_sleep(30)")
        except psycopg.Error as exc:
            errors.append(exc)

    thread = threading.Thread(target=sleep)
    thread.start()
    try:
        time.sleep(1.2)
        code, data = ops_json_sync(ops_settings, "db", "long-queries", "--older-than", "1")
        assert code == 0
        mine = [q for q in data["queries"] if q["application_name"] == "ops-test-sleeper"]
        assert len(mine) == 1 and "pg_sleep" in mine[0]["query"]

        code, data = ops_json_sync(
            ops_settings, "db", "long-queries", "--older-than", "1", "--terminate"
        )
        assert code == 0
        assert any(
            q["application_name"] == "ops-test-sleeper" and q["terminated"] for q in data["queries"]
        )
        thread.join(10)
        assert not thread.is_alive()
        assert errors, "the sleeping query was not terminated"
    finally:
        sleeper.close()
        thread.join(1)


# --- backups -----------------------------------------------------------------------------


async def test_backup_then_restore_gives_the_same_pools_and_ledgers(
    server: RunningServer,
    stub: Stub,
    ops_settings: Settings,
    admin_url: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    for wager in (1000, 2500, 777):
        await contribute(stub, wager)
    await stub.Win(
        pb.WinRequest(
            group=pb.JACKPOT_GROUP_MINOR,
            game_id="ops-test",
            user_id=str(uuid.uuid4()),
            win_amount=3,
            idempotency_key=uuid.uuid4().hex,
        )
    )
    with connect_ops(database_url) as conn:
        source = pgstat.ledger_counts(conn)

    code, created = await ops_json(ops_settings, "backup", "create", "--dir", str(tmp_path))
    assert code == 0, created
    file = Path(created["file"])
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert file.parent == tmp_path / today
    assert re.fullmatch(r"jackpot_full_backup_\d{8}_\d{6}\.dump", file.name)
    assert created["verification"]["ok"] and not created["verification"]["missing"]
    assert not leftovers(tmp_path)

    code, verified = await ops_json(ops_settings, "backup", "verify", str(file))
    assert code == 0 and verified["ok"]
    assert set(backup.required_tables()) <= set(verified["table_data"])

    target = unique_name("jackpot_restore")
    try:
        code, restored = await ops_json(
            ops_settings, "backup", "restore", str(file), "--database", target
        )
        assert code == 0, restored
        assert restored["counts"] == json.loads(json.dumps(source, default=str))
        assert [p["group"] for p in restored["counts"]["pools"]] == GROUPS
        assert restored["counts"]["tables"]["contributions"] == 3
        assert restored["counts"]["tables"]["wins"] == 1
        assert restored["balanced"] is True
        assert restored["revision"] == pgstat.head_revision()
        # what to point the recovery instance at, without a password
        assert "password" not in restored["database_url"]
        with connect_ops(restored["database_url"]) as conn:
            assert pgstat.ledger_counts(conn) == source

        code, _ = await ops(ops_settings, "backup", "restore", str(file), "--database", target)
        assert code == 1  # never over an existing database
    finally:
        drop_database(admin_url, target)


def test_backup_verify_rejects_a_damaged_file(ops_settings: Settings, tmp_path: Path) -> None:
    code, created = ops_json_sync(ops_settings, "backup", "create", "--dir", str(tmp_path))
    assert code == 0
    damaged = tmp_path / "damaged.dump"
    damaged.write_bytes(Path(created["file"]).read_bytes()[:200])
    code, data = ops_json_sync(ops_settings, "backup", "verify", str(damaged))
    assert code == 1 and data["ok"] is False and data["error"]

    code, data = ops_json_sync(ops_settings, "backup", "verify", str(tmp_path / "missing.dump"))
    assert code == 1 and data["error"] == "no such file"


def _fake_tool(directory: Path, name: str, major: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tool = directory / name
    tool.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) {major}.1'\n")
    tool.chmod(0o755)
    return tool


def test_client_tools_match_the_server_major_and_never_go_older(tmp_path: Path) -> None:
    # Majors 97..99 exist nowhere on a real machine, so only the fakes can match them.
    exact = _fake_tool(tmp_path / "a", "pg_dump", 98)
    newer = _fake_tool(tmp_path / "b", "pg_dump", 99)
    assert backup.find_tool("pg_dump", 98, [tmp_path / "b", tmp_path / "a"]).path == exact
    assert backup.find_tool("pg_dump", 97, [tmp_path / "a", tmp_path / "b"]).path == exact
    assert backup.find_tool("pg_dump", 99, [tmp_path / "a", tmp_path / "b"]).path == newer
    with pytest.raises(backup.BackupError, match=r"PostgreSQL 100 or newer.*postgresql-client-100"):
        backup.find_tool("pg_dump", 100, [tmp_path / "a", tmp_path / "b"])


def test_backup_prune_deletes_only_old_backups(ops_settings: Settings, tmp_path: Path) -> None:
    day = tmp_path / "2020-01-01"
    day.mkdir()
    old = day / "jackpot_full_backup_20200101_000000.dump"
    other = day / "notes.txt"
    for path in (old, other):
        path.write_text("x")
        os.utime(path, (time.time() - 40 * 86400,) * 2)
    recent = tmp_path / "2099-01-01" / "jackpot_schema_20990101_000000.sql"
    recent.parent.mkdir()
    recent.write_text("x")
    # The newest verified backup is never pruned: with this one, the old one may go.
    newest = tmp_path / "2099-01-01" / "jackpot_full_backup_20990101_000000.dump"
    newest.write_text("x")

    code, data = ops_json_sync(
        ops_settings, "backup", "prune", "--dir", str(tmp_path), "--dry-run", "--keep", "1"
    )
    assert code == 0 and [Path(f["file"]) for f in data["files"]] == [old]
    assert old.exists()
    code, data = ops_json_sync(
        ops_settings, "backup", "prune", "--dir", str(tmp_path), "--keep", "1"
    )
    assert code == 0 and not old.exists() and other.exists() and recent.exists()


# --- diagnostics and report --------------------------------------------------------------


async def test_diagnostics_shows_locks_and_long_running_queries(
    server: RunningServer, ops_settings: Settings, database_url: str
) -> None:
    holder = psycopg.connect(database_url, autocommit=True, application_name="ops-test-holder")

    def hold() -> None:
        with contextlib.suppress(psycopg.Error):
            holder.execute("SELECT pg_advisory_lock(4242), pg_sleep(2.5)")

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        await asyncio.sleep(1.3)
        argv = (
            "diagnostics",
            "--grpc-target",
            grpc_target(server),
            "--health-url",
            health_base(server),
            "--long-query-seconds",
            "1",
        )
        code, data = await ops_json(ops_settings, *argv)
        assert code == 0, data["problems"]
        assert data["database"]["reachable"] and data["database"]["database"]
        assert any(lock["locktype"] == "advisory" and lock["granted"] for lock in data["locks"])
        assert any(q["application_name"] == "ops-test-holder" for q in data["long_running"])
        statuses = {c["status"] for c in data["health"] if c["check"] != "books"}
        assert statuses == {"SERVING", "HTTP 200"}
        assert "memory_percent" in data["host"]

        code, text = await ops(ops_settings, *argv)
        assert code == 0
        for title in (
            "== Service health ==",
            "== Locks ==",
            "== Queries running longer than 1 s ==",
        ):
            assert title in text
    finally:
        await asyncio.to_thread(thread.join, 10)
        holder.close()


def test_diagnostics_fails_when_the_database_is_down(settings: Settings) -> None:
    down = dataclasses.replace(
        settings,
        database=dataclasses.replace(
            settings.database, url=f"postgresql://postgres@127.0.0.1:{free_port()}/x"
        ),
    )
    code, data = ops_json_sync(down, "diagnostics", "--no-service", "--timeout", "2")
    assert code == 1
    assert data["database"]["reachable"] is False and data["problems"]


async def test_report_reads_the_service_metrics_and_database(
    server: RunningServer, stub: Stub, ops_settings: Settings
) -> None:
    await contribute(stub)
    await stub.GetPools(pb.GetPoolsRequest())
    code, data = await ops_json(
        ops_settings,
        "report",
        "--metrics-url",
        health_base(server),
        "--period",
        "5m",
        "--grpc-target",
        grpc_target(server),
        "--probe",
        "3",
    )
    assert code == 0, data["problems"]
    metrics = data["metrics"]
    assert metrics["ok"] and metrics["url"].endswith("/metrics?period=5m")
    assert metrics["summary"]["total_requests"] >= 2
    assert metrics["summary"]["p95_ms"] is not None
    assert {"Contribute", "GetPools"} <= {m["method"] for m in metrics["methods"]}
    assert [p["calls"] for p in data["probe"]] == [3, 3, 3]
    # A fresh test database has no pg_stat_statements extension.
    assert data["pg_stat_statements"]["status"] == "not installed"
    assert {i["table"] for i in data["indexes"]} <= set(pgstat.TABLES)
    assert data["growth"][0]["contributions"] >= 1
    assert data["resources"] is None or isinstance(data["resources"], list)

    code, text = await ops(ops_settings, "report", "--metrics-url", health_base(server))
    assert code == 0
    for title in (
        "== Service metrics",
        "== Top queries (pg_stat_statements: not installed) ==",
        "== Index usage ==",
        "== Resource utilization by day (system_metrics, 30 days) ==",
    ):
        assert title in text


@contextlib.asynccontextmanager
async def canned_metrics(payload: Any) -> AsyncIterator[str]:
    seen: list[str] = []

    async def metrics(request: web.Request) -> web.Response:
        seen.append(request.query_string)
        return web.json_response(payload)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_report_tolerates_missing_metric_fields(ops_settings: Settings) -> None:
    partial = {
        "total_requests": 1200,
        "error_rate": 0.02,
        "response_times": {"p95": 650.0},
        "throughput": 90,
    }
    async with canned_metrics(partial) as base:
        code, data = await ops_json(ops_settings, "report", "--metrics-url", base, "--no-db")
    assert code == 1  # graded critical: the report fails
    summary = data["metrics"]["summary"]
    assert summary["total_requests"] == 1200
    assert summary["avg_ms"] is None and summary["p99_ms"] is None
    assert summary["error_rate_status"].startswith("CRITICAL")
    assert summary["p95_status"].startswith("CRITICAL")
    assert summary["throughput_per_minute"] == 90
    assert data["metrics"]["methods"] == []

    code, data = await ops_json(
        ops_settings, "report", "--metrics-url", f"http://127.0.0.1:{free_port()}", "--no-db"
    )
    assert code == 1 and data["metrics"]["error"] == "connection refused"


@pytest.mark.parametrize(
    ("error_rate", "p95", "code", "problem"),
    [
        (0.0005, 40.0, 0, None),
        (0.002, 40.0, 1, "error rate 0.2% above target (0.1%)"),
        (0.0, 650.0, 1, "p95 650.0 ms CRITICAL (> 500 ms)"),
    ],
)
async def test_report_fails_when_it_grades_the_service_off_target(
    ops_settings: Settings, error_rate: float, p95: float, code: int, problem: str | None
) -> None:
    payload = {"total_requests": 5000, "error_rate": error_rate, "response_times": {"p95": p95}}
    async with canned_metrics(payload) as base:
        got, data = await ops_json(ops_settings, "report", "--metrics-url", base, "--no-db")
    assert got == code, data
    assert data["problems"] == ([] if problem is None else [problem])


# --- configuration -----------------------------------------------------------------------


async def test_config_show_validate_and_update(
    server: RunningServer, ops_settings: Settings, tmp_path: Path
) -> None:
    target = grpc_target(server)
    code, shown = await ops_json(ops_settings, "config", "show", "--grpc-target", target)
    assert code == 0 and [p["group"] for p in shown["pools"]] == GROUPS
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps(shown))
    code, data = await ops_json(ops_settings, "config", "validate", str(saved))
    assert code == 0 and data["violations"] == []

    broken = json.loads(saved.read_text())
    broken["pools"][0]["contribution_rate"] = "1.5"
    del broken["pools"][2]["seed_amount"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken))
    code, data = await ops_json(ops_settings, "config", "validate", str(bad))
    assert code == 1
    assert {v["field"] for v in data["violations"]} == {
        "pools.minor.contribution_rate",
        "pools.mega.seed_amount",
    }

    toml = tmp_path / "config.toml"
    toml.write_text(
        "[pools.minor]\ncontribution_rate = 0.006\nseed_amount = 10000\nmax_amount = 9000\n"
        '[pools.major]\ncontribution_rate = "0.003"\nseed_amount = 100000\n'
    )
    code, text = await ops(ops_settings, "config", "validate", str(toml))
    assert code == 1
    assert "pools.minor.max_amount" in text and "pools.mega: is missing" in text

    # Three rates of 1 would put three times each wager into the pools.
    creating = tmp_path / "money-from-nowhere.toml"
    creating.write_text(
        "".join(
            f'[pools.{g}]\ncontribution_rate = "1"\nseed_amount = 10000\n'
            for g in ("minor", "major", "mega")
        )
    )
    code, text = await ops(ops_settings, "config", "validate", str(creating))
    assert code == 1
    assert "rates would sum to 3, above the limit of 1" in text

    code, data = await ops_json(ops_settings, "config", "validate")  # the database's
    assert code == 0

    update = ("config", "update", "--grpc-target", target, "--group", "minor")
    code, data = await ops_json(
        ops_settings, *update, "--rate", "0.006", "--seed", "20000", "--max", "300000", "--dry-run"
    )
    assert code == 0 and data["after"]["version"] == data["before"]["version"] + 1
    code, data = await ops_json(
        ops_settings,
        *update,
        "--rate",
        "0.006",
        "--seed",
        "20000",
        "--max",
        "300000",
        "--actor",
        "ops-test",
    )
    assert code == 0 and data["audit_id"] > 0
    assert data["config"]["contribution_rate"] == "0.0060000000"
    code, shown = await ops_json(ops_settings, "config", "show", "--from-db")
    minor = shown["pools"][0]
    assert (minor["seed_amount"], minor["max_amount"], minor["version"]) == (20000, 300000, 2)

    code, text = await ops(ops_settings, *update, "--rate", "2")
    assert code == 1  # the service names the field

    code, data = await ops_json(ops_settings, *update, "--rate", "0.007", "--at-next-win")
    assert code == 0 and data["scheduled"] is True and data["schedule_id"] > 0
    assert data["config"]["contribution_rate"] == "0.0060000000"  # in force until the win
    code, shown = await ops_json(ops_settings, "config", "show", "--from-db")
    assert shown["pools"][0]["version"] == 2


async def test_config_update_rejects_a_bad_rate_with_the_field(
    server: RunningServer, ops_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    update = ("config", "update", "--grpc-target", grpc_target(server), "--group", "major")
    code, _ = await ops(ops_settings, *update, "--rate", "1.01")
    assert code == 1
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and "contribution_rate: must be between 0 and 1" in err
    code, _ = await ops(ops_settings, *update)
    assert code == 2  # nothing to change


# --- the alert rules read metrics the service really exposes ---------------------------


def _rule_metric_names() -> set[str]:
    """The service's metric names the alert and recording rules read (not the recorded
    `level:metric:operation` names, which contain colons)."""
    names: set[str] = set()
    for path in (PROJECT_ROOT / "deploy/prometheus").glob("jackpot-*.yml"):
        rules = yaml.safe_load(path.read_text())
        for group in rules.get("groups", ()):
            for rule in group["rules"]:
                names.update(
                    re.findall(r"(?<![\w:])((?:jackpot|grpc_server)_\w+)(?![\w:])", rule["expr"])
                )
    return names


async def test_alert_rules_read_metrics_the_service_exposes(server: RunningServer) -> None:
    from prometheus_client import generate_latest

    from jackpot_grpc.domain import model
    from jackpot_grpc.domain.model import WinOutcome, WinResult
    from jackpot_grpc.observability.telemetry import setup_telemetry

    assert server.auditor is not None
    await server.auditor.run_once()  # the audit gauges exist once an audit has run
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{health_base(server)}/metrics/prometheus") as response,
    ):
        exposition = await response.text()
    telemetry = setup_telemetry(environ={})
    try:  # the OTel business counters appear once used
        now = datetime.now(UTC)
        one_each = dict.fromkeys(model.GROUPS, 1)
        telemetry.metrics.contributions_counted(1, one_each, one_each)  # one row, every pool
        pools = await server.service.pools()
        telemetry.metrics.win_paid(WinResult(1, WinOutcome(1, 2, 0, 1), pools[0], now, False))
        telemetry.metrics.config_changed(model.Group.MINOR)
        exposition += generate_latest(telemetry.prometheus).decode()
    finally:
        telemetry.shutdown()
    exposed = set(re.findall(r"^# TYPE (\w+) ", exposition, re.MULTILINE))
    exposed |= {f"{n}_{part}" for n in exposed for part in ("bucket", "sum", "count")}
    missing = _rule_metric_names() - exposed
    assert not missing, f"alert rules read metrics nobody exposes: {sorted(missing)}"


async def test_a_backup_from_an_older_release_is_migrated_before_its_audit(
    ops_settings: Settings, admin_url: str, tmp_path: Path
) -> None:
    """A backup taken before a deploy holds an older schema; the restore brings it to this
    release's before auditing it (this release's audit reads what later migrations add),
    instead of failing the audit and dropping the restored database."""
    older = unique_name("jackpot_older")
    target = unique_name("jackpot_restore")
    older_url = create_database(admin_url, older)
    try:
        migrations.upgrade(older_url, "0016")
        settings = dataclasses.replace(
            ops_settings, database=dataclasses.replace(ops_settings.database, url=older_url)
        )
        code, created = await ops_json(settings, "backup", "create", "--dir", str(tmp_path))
        assert code == 0, created
        code, restored = await ops_json(
            settings, "backup", "restore", created["file"], "--database", target
        )
        assert code == 0, restored
        assert restored["balanced"] is True
        assert restored["revision"] == pgstat.head_revision()
    finally:
        drop_database(admin_url, target)
        drop_database(admin_url, older)
