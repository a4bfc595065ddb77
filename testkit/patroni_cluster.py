"""A real PostgreSQL cluster under Patroni on loopback: one etcd, three PostgreSQL 15 nodes.

Debian's `patroni` and `etcd-server` (make failover-tools) and Debian's PostgreSQL 15
binaries. Everything lives in a temporary directory and listens on free loopback ports;
`synchronous_mode: true`, so the leader's commits wait for one synchronous standby and
only that standby may be promoted. Trust authentication on loopback only: a throwaway
cluster that nothing else can reach.

Every process is started in a session (process group) of its own and `PatroniCluster.stop`
kills every group it started (etcd, each Patroni, each postmaster with its backends),
whatever state the test left them in. PostgreSQL refuses to run as root, so under root
the nodes run as the `postgres` user (setpriv, which execs: Patroni stays our child).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml
from psycopg.conninfo import make_conninfo

from testkit.ports import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
NODES = 3
# Failover timing: the leader key lives TTL seconds unless renewed every LOOP_WAIT; Patroni
# wants TTL >= LOOP_WAIT + 2 * RETRY_TIMEOUT.
TTL, LOOP_WAIT, RETRY_TIMEOUT = 8, 1, 3


class ClusterError(RuntimeError):
    """The cluster did not reach a state in time; the message carries the logs' tails."""


def missing_tools() -> list[str]:
    """The commands this harness needs that this machine lacks."""
    missing = [t for t in ("patroni", "patronictl", "etcd") if shutil.which(t) is None]
    if not (PG_BIN / "postgres").exists():
        missing.append(str(PG_BIN / "postgres"))
    return missing


def _http_json(url: str, timeout: float = 3.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def _http_status(url: str, timeout: float = 3.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"--- {path.name}: (none)"
    return "\n".join([f"--- {path.name}", *text])


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie nobody reaped yet is not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class Node:
    """One Patroni-managed PostgreSQL: its ports, its directory, its Patroni process."""

    name: str
    pg_port: int
    api_port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    postmaster_pgids: set[int] = field(default_factory=set)

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def config_path(self) -> Path:
        return self.directory / "patroni.yml"

    @property
    def log_path(self) -> Path:
        return self.directory / f"patroni-{self.starts}.log"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid (postmaster.pid's first line), if any."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _running(pid) else None

    def remember_postmaster(self) -> int | None:
        """Note the postmaster's process group (Patroni starts it in a session of its own)
        so that teardown can kill it even after its pid file is gone. The group is that
        of the session Patroni's launcher opened (setsid), the postmaster's parent."""
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(OSError):
                self.postmaster_pgids.add(os.getpgid(pid))
        return pid

    def children(self, marker: str) -> list[psutil.Process]:
        """The postmaster's children whose command line contains `marker` (e.g.
        "walreceiver")."""
        pid = self.postmaster_pid()
        if pid is None:
            return []
        found = []
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.Error):
                if marker in " ".join(child.cmdline()):
                    found.append(child)
        return found

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class PatroniCluster:
    """etcd plus NODES Patroni nodes; `start()` returns once a leader and a synchronous
    standby stream, `stop()` kills every process group it started."""

    def __init__(self, base: Path | None = None, nodes: int = NODES) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="jackpot-patroni-", dir=base))
        self.scope = f"jackpot-failover-{uuid.uuid4().hex[:8]}"
        self.etcd_client_port = free_port()
        self.etcd_peer_port = free_port()
        self.etcd: subprocess.Popen[bytes] | None = None
        self.nodes = [
            Node(f"node{i}", free_port(), free_port(), self.base / f"node{i}") for i in range(nodes)
        ]
        self.run_as = "postgres" if os.geteuid() == 0 else None

    # -- addresses --------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", connect_timeout: int = 2, **extra: Any) -> str:
        """A libpq multi-host conninfo listing every node: with
        target_session_attrs=read-write, libpq tries the hosts in turn and keeps the one
        that accepts writes (the leader)."""
        return make_conninfo(
            "",
            host=",".join("127.0.0.1" for _ in self.nodes),
            port=",".join(str(n.pg_port) for n in self.nodes),
            dbname=dbname,
            user="postgres",
            target_session_attrs="read-write",
            connect_timeout=connect_timeout,
            **extra,
        )

    # -- start ------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        """etcd, then the first node (it bootstraps: initdb, leader), then the others
        (base backups from it); returns once every node runs and one is the synchronous
        standby. ClusterError (with the logs) if any step takes longer than its share."""
        deadline = time.monotonic() + timeout
        os.chmod(self.base, 0o755)
        self._start_etcd()
        self.wait_until(lambda: self._etcd_healthy(), deadline, "etcd healthy")
        for node in self.nodes:
            node.directory.mkdir(mode=0o700)
            node.config_path.write_text(yaml.safe_dump(self._config(node)))
            self._own(node.directory)
        self.start_node(self.nodes[0])
        self.wait_until(lambda: self.leader() is self.nodes[0], deadline, "node0 leader")
        for node in self.nodes[1:]:
            self.start_node(node)
        self.wait_until(
            lambda: self.members_running() == len(self.nodes) and self.sync_standby() is not None,
            deadline,
            f"{len(self.nodes)} members running with a synchronous standby",
        )
        for node in self.nodes:
            node.remember_postmaster()

    def _own(self, path: Path) -> None:
        if self.run_as is None:
            return
        user = pwd.getpwnam(self.run_as)
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, user.pw_uid, user.pw_gid)

    def _start_etcd(self) -> None:
        data = self.base / "etcd"
        client = f"http://127.0.0.1:{self.etcd_client_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        with (self.base / "etcd.log").open("wb") as log:
            self.etcd = subprocess.Popen(
                [
                    "etcd",
                    "--name=etcd0",
                    f"--data-dir={data}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=etcd0={peer}",
                    f"--initial-cluster-token={self.scope}",
                    "--initial-cluster-state=new",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _etcd_healthy(self) -> bool:
        if self.etcd is None or self.etcd.poll() is not None:
            raise ClusterError(f"etcd exited\n{_tail(self.base / 'etcd.log')}")
        try:
            health = _http_json(f"http://127.0.0.1:{self.etcd_client_port}/health")
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return bool(health and health.get("health") == "true")

    def _config(self, node: Node) -> dict[str, Any]:
        hba = [
            "local all all trust",
            "host all all 127.0.0.1/32 trust",
            "host replication all 127.0.0.1/32 trust",
        ]
        return {
            "scope": self.scope,
            "name": node.name,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"127.0.0.1:{node.api_port}",
                "connect_address": f"127.0.0.1:{node.api_port}",
            },
            "etcd3": {"hosts": f"127.0.0.1:{self.etcd_client_port}"},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL,
                    "loop_wait": LOOP_WAIT,
                    "retry_timeout": RETRY_TIMEOUT,
                    "maximum_lag_on_failover": 1 << 20,
                    "synchronous_mode": True,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": {
                            "wal_level": "replica",
                            "hot_standby": "on",
                            "wal_log_hints": "on",
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "max_connections": 60,
                            "wal_keep_size": "128MB",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.pg_port}",
                "connect_address": f"127.0.0.1:{node.pg_port}",
                "data_dir": str(node.data_dir),
                "bin_dir": str(PG_BIN),
                "pgpass": str(node.directory / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres"},
                    "replication": {"username": "postgres"},
                    "rewind": {"username": "postgres"},
                },
                "parameters": {
                    "unix_socket_directories": str(node.directory),
                    "shared_buffers": "32MB",
                },
                "pg_hba": hba,
            },
            "tags": {},
        }

    def start_node(self, node: Node) -> None:
        """Start (or restart) the node's Patroni: it starts PostgreSQL itself, and a node
        that was the leader rejoins as a replica (pg_rewind if its timeline diverged)."""
        assert not node.alive(), f"{node.name} is already running"
        node.starts += 1
        command = ["patroni", str(node.config_path)]
        if self.run_as is not None:
            user = f"--reuid={self.run_as}", f"--regid={self.run_as}", "--init-groups"
            command = ["setpriv", *user, *command]
        with node.log_path.open("wb") as log:
            node.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=node.directory,
                start_new_session=True,
            )

    # -- state ------------------------------------------------------------------------

    def members(self) -> list[dict[str, Any]]:
        """Patroni's /cluster view from any live node (empty if none answers)."""
        for node in self.nodes:
            if not node.alive():
                continue
            try:
                view = _http_json(f"{node.api}/cluster")
            except (urllib.error.URLError, OSError, ValueError):
                continue
            return list(view.get("members", []))
        return []

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def _with_role(self, *roles: str) -> Node | None:
        for member in self.members():
            if member.get("role") in roles and member.get("state") in ("running", "streaming"):
                return self.node(member["name"])
        return None

    def leader(self) -> Node | None:
        """The node Patroni's cluster view names leader, if its PostgreSQL runs and it
        answers /primary (the leader check Patroni's REST API offers)."""
        node = self._with_role("leader", "master")
        if node is None or _http_status(f"{node.api}/primary") != 200:
            return None
        return node

    def wait_leader(self, timeout: float = 30.0, not_: Node | None = None) -> Node:
        """The leader (other than `not_`), once there is one; ClusterError after `timeout`."""
        found: list[Node] = []

        def ready() -> bool:
            leader = self.leader()
            if leader is None or leader is not_:
                return False
            found.append(leader)
            return True

        self.wait_until(ready, time.monotonic() + timeout, "a leader")
        return found[-1]

    def sync_standby(self) -> Node | None:
        return self._with_role("sync_standby")

    def members_running(self) -> int:
        return sum(1 for m in self.members() if m.get("state") in ("running", "streaming"))

    def replicas(self) -> list[Node]:
        leader = self.leader()
        return [n for n in self.nodes if n is not leader and n.alive()]

    def wait_until(
        self, ready: Callable[[], bool], deadline: float, what: str, interval: float = 0.2
    ) -> float:
        """Poll `ready` until it holds (the monotonic time it did); ClusterError with every
        log's tail when `deadline` (monotonic) passes first."""
        while True:
            if ready():
                return time.monotonic()
            if time.monotonic() > deadline:
                raise ClusterError(f"cluster: not {what} in time\n{self.logs()}")
            time.sleep(interval)

    def logs(self) -> str:
        parts = [_tail(self.base / "etcd.log", 10)]
        for node in self.nodes:
            parts.append(_tail(node.log_path))
        parts.append(f"members: {json.dumps(self.members())}")
        return "\n".join(parts)

    # -- faults -----------------------------------------------------------------------

    def kill_node(self, node: Node) -> None:
        """kill -9 of the whole node, as if its machine died: Patroni first (so it cannot
        restart PostgreSQL), then the postmaster and every backend (its process group)."""
        pid = node.remember_postmaster()
        assert node.proc is not None and pid is not None, f"{node.name} runs no postmaster"
        pgid = os.getpgid(pid)  # Patroni's setsid() child, the postmaster's parent
        _kill_group(node.proc.pid)
        node.proc.wait(10)
        _kill_group(pgid)
        deadline = time.monotonic() + 10
        while _running(pid):
            if time.monotonic() > deadline:
                raise ClusterError(f"{node.name}: postmaster {pid} survived SIGKILL")
            time.sleep(0.02)

    def patronictl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`patronictl -c <a live node's config> <args>`; raises with its output on failure."""
        live = next(n for n in self.nodes if n.alive())
        done = subprocess.run(
            ["patronictl", "-c", str(live.config_path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise ClusterError(f"patronictl {' '.join(args)}: {done.stdout}\n{done.stderr}")
        return done

    def switchover(self, candidate: Node) -> None:
        """A graceful switchover to `candidate` (must be the synchronous standby in
        synchronous mode), scheduled now, without prompting."""
        leader = self.leader()
        assert leader is not None
        self.patronictl(
            "switchover",
            "--leader",
            leader.name,
            "--candidate",
            candidate.name,
            "--force",
            self.scope,
        )

    # -- stop -------------------------------------------------------------------------

    def stop(self) -> None:
        """Kill every process group this cluster started; remove its directory."""
        for node in self.nodes:
            node.remember_postmaster()
            if node.proc is not None:
                _kill_group(node.proc.pid)
            for pgid in node.postmaster_pgids:
                _kill_group(pgid)
        if self.etcd is not None:
            _kill_group(self.etcd.pid)
        for proc in [n.proc for n in self.nodes] + [self.etcd]:
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        # Postmasters are not our children: wait for them to be gone before removing files.
        deadline = time.monotonic() + 10
        for node in self.nodes:
            for pgid in node.postmaster_pgids:
                while _running(pgid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def patroni_cluster(base: Path | None = None, timeout: float = 120.0) -> Iterator[PatroniCluster]:
    """A started cluster for the block; stopped (every process killed) afterwards, also
    when starting it failed."""
    cluster = PatroniCluster(base)
    try:
        cluster.start(timeout)
        yield cluster
    finally:
        cluster.stop()
