"""DB_PGBOUNCER=1 behind a real PgBouncer in transaction mode (`make test-tools` installs it;
without it the tests skip, or fail under CI=true).

PgBouncer runs with one server connection per database, so every client connection's
transactions share it: anything a connection left in the session (a prepared statement)
is seen by the next client. Without the setting psycopg's automatic prepared statements
collide there; with it the service's reads, writes, audits and history writes all work.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jackpot_grpc.adapters.database import connection_kwargs
from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import start_server
from testkit.ledger import check_books
from testkit.ports import free_port
from testkit.tools import require, require_tcp_server, require_tool

# PgBouncer reaches PostgreSQL over TCP: not the embedded server's private unix socket.
pytestmark = pytest.mark.system_postgres


def has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def bouncer_url(database_url: str) -> Iterator[str]:
    """`database_url` through PgBouncer (transaction mode, one server connection)."""
    pgbouncer = require_tool("pgbouncer", "make test-tools: apt-get install pgbouncer")
    if os.geteuid() == 0:
        require(
            has_user("postgres"), "pgbouncer will not run as root, and there is no postgres user"
        )
    host, server_port = require_tcp_server(database_url)
    target = conninfo_to_dict(database_url)
    port = free_port()
    # PgBouncer refuses to run as root; as root it drops to `user`, which must read this.
    directory = Path(tempfile.mkdtemp(prefix="jackpot-pgbouncer-"))
    directory.chmod(0o755)
    config = directory / "pgbouncer.ini"
    config.write_text(
        f"""[databases]
* = host={host} port={server_port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "users.txt"}
pool_mode = transaction
default_pool_size = 1
max_client_conn = 50
ignore_startup_parameters = extra_float_digits
"""
        + ("user = postgres\n" if os.geteuid() == 0 else "")
    )
    (directory / "users.txt").write_text(f'"{target.get("user", "postgres")}" ""\n')
    for path in directory.iterdir():
        path.chmod(0o644)
    bouncer = subprocess.Popen(
        [pgbouncer, str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = make_conninfo(database_url, host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg.connect(url, connect_timeout=1).close()
                break
            except psycopg.OperationalError:
                if bouncer.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        bouncer.terminate()
        try:
            bouncer.wait(10)
        except subprocess.TimeoutExpired:
            bouncer.kill()
            bouncer.wait(5)
        shutil.rmtree(directory, ignore_errors=True)


def _alternate(url: str, settings: Settings, rounds: int = 8) -> None:
    """Two client connections run one query in turn, more often than psycopg's default
    threshold for preparing it."""
    kwargs = connection_kwargs(settings, url)
    with (
        psycopg.connect(url, autocommit=True, **kwargs) as first,
        psycopg.connect(url, autocommit=True, **kwargs) as second,
    ):
        for _ in range(rounds):
            for conn in (first, second):
                conn.execute("SELECT current_amount FROM jackpots WHERE lock_order = %s", (0,))


def test_prepared_statements_collide_behind_pgbouncer_unless_disabled(
    bouncer_url: str, settings: Settings
) -> None:
    with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
        _alternate(
            bouncer_url,
            # No timeouts in the startup packet: PgBouncer would refuse the connection.
            dataclasses.replace(
                settings,
                database=dataclasses.replace(
                    settings.database, pgbouncer=False, lock_timeout=0, statement_timeout=0
                ),
            ),
        )
    _alternate(
        bouncer_url,
        dataclasses.replace(
            settings, database=dataclasses.replace(settings.database, pgbouncer=True)
        ),
    )


async def test_the_service_works_behind_pgbouncer_in_transaction_mode(
    bouncer_url: str, database_url: str, settings: Settings
) -> None:
    behind = dataclasses.replace(
        settings,
        database=dataclasses.replace(
            settings.database, pgbouncer=True, pool_min_size=2, pool_max_size=4
        ),
    )
    running = await start_server(behind, bouncer_url, port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
            for i in range(20):
                request = pb.ContributeRequest(
                    game_id="bouncer", wager_amount=1_000 + i, idempotency_key=f"b-{i}"
                )
                await stub.Contribute(request, timeout=10)
                await stub.GetPools(pb.GetPoolsRequest(), timeout=10)
        assert running.auditor is not None and running.sampler is not None
        await running.auditor.run_once()  # the advisory-locked shared audit
        assert running.auditor.failures == 0 and running.auditor.last is not None
        assert running.auditor.last.balanced
        running.sampler.take_sample()
        assert await running.sampler.flush()  # metrics history writes
        await running.sampler.maintain()  # compaction and pruning (advisory locks)
        assert running.sampler.last_error is None
    finally:
        await running.stop(grace=1.0)
    assert check_books(database_url) == []
