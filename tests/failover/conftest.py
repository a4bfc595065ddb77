"""The real-cluster failover suite (`make test-failover`): one etcd and three PostgreSQL 15
nodes under Patroni (testkit/patroni_cluster.py), the service as a real `jackpot serve`
process pointed at all three with a multi-host DSN.

Every test here is marked `failover` and runs only when asked for by marker
(`pytest -m failover tests/failover`): `make test` and CI's other runs deselect them, since
the cluster takes most of the machine for a few minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from testkit.paths import PROJECT_ROOT
from testkit.patroni_cluster import PatroniCluster, missing_tools, patroni_cluster
from testkit.processes import ServiceProcess, clean_env, jackpot_executable, service_env
from testkit.tools import require

HERE = Path(__file__).parent
DATABASE = "jackpot"
# The service's bounds on a commit that does not return and on the oldest batch in flight
# (their defaults, spelled out: scenario C's figures depend on them).
SERVICE_BOUNDS = {"JACKPOT_COMMIT_TIMEOUT": "5", "JACKPOT_BATCH_AGE_LIMIT": "6"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "failover: the real-cluster failover suite (make test-failover)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark this directory's tests `failover`; deselect them unless the marker expression
    names `failover` (make test-failover passes -m failover)."""
    mine = [item for item in items if HERE in Path(str(item.path)).parents]
    for item in mine:
        item.add_marker(pytest.mark.failover)
    if "failover" in (config.getoption("markexpr") or ""):
        return
    config.hook.pytest_deselected(items=mine)
    items[:] = [item for item in items if item not in mine]


def results_path() -> Path:
    raw = os.environ.get("JACKPOT_FAILOVER_RESULTS", "").strip()
    return Path(raw) if raw else PROJECT_ROOT / ".data" / "failover-results.json"


@pytest.fixture(scope="session")
def failover_results() -> Iterator[dict[str, Any]]:
    """Each scenario's figures, written as one JSON file when the session ends
    (JACKPOT_FAILOVER_RESULTS, default .data/failover-results.json)."""
    results: dict[str, Any] = {}
    yield results
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\n[failover] figures written to {path}")


@pytest.fixture(scope="session")
def cluster() -> Iterator[PatroniCluster]:
    """The running cluster, its `jackpot` database created and migrated on the leader."""
    missing = missing_tools()
    require(not missing, f"missing {', '.join(missing)} (make failover-tools)")
    with patroni_cluster(timeout=120) as running:
        with psycopg.connect(running.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        # The service's own migration command, through the same multi-host DSN: libpq
        # picks the leader (target_session_attrs=read-write).
        done = subprocess.run(
            [*jackpot_executable(), "migrate"],
            env={**clean_env(), "DATABASE_URL": running.dsn(DATABASE), "OTEL_SDK_DISABLED": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=PROJECT_ROOT,
            check=False,
        )
        assert done.returncode == 0, f"jackpot migrate: {done.stdout}\n{done.stderr}"
        yield running


@pytest.fixture(scope="session")
def database_dsn(cluster: PatroniCluster) -> str:
    """The multi-host DSN of the jackpot database: every node, read-write, short
    per-host connect_timeout."""
    return cluster.dsn(DATABASE, connect_timeout=2)


@pytest.fixture(scope="session")
def service(
    database_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """One `jackpot serve` for the whole suite: no scenario may need to restart it."""
    log_dir = tmp_path_factory.mktemp("failover-service")
    # Signed ledger checkpoints every second: after a failover the service compares the
    # newest one with the new leader (none of its leaves may be missing).
    key = log_dir / "ledger.key"
    subprocess.run(
        [*jackpot_executable(), "ledger", "keygen", "--out", str(key), "--name", "failover"],
        env=clean_env(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    checkpoints = {
        "JACKPOT_LEDGER_KEY_FILE": str(key),
        "JACKPOT_CHECKPOINT_LOG": str(log_dir / "checkpoints.log"),
        "JACKPOT_CHECKPOINT_INTERVAL": "1",
    }
    process = ServiceProcess(
        ["serve"],
        service_env(database_dsn, log_dir, DB_POOL_TIMEOUT="2", **SERVICE_BOUNDS, **checkpoints),
        log_dir,
        name="serve",
        new_session=True,
    )
    try:
        started = time.monotonic()
        process.start(timeout=60)
        print(f"\n[failover] service SERVING in {time.monotonic() - started:.1f} s")
        yield process
    finally:
        process.stop()
