"""`jackpot edge`: HAProxy in master-worker mode with the generated config, reloaded
without dropping connections whenever the clients file changes.

A reload is SIGUSR2 to HAProxy's master: it starts new workers on the new config, which
take over the listening sockets, while the old workers finish the connections they hold
(up to `hard-stop-after`). A new config is checked with `haproxy -c` first; one HAProxy
refuses is logged and the running config kept.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import FrameType

from jackpot_grpc.adapters import clients_file
from jackpot_grpc.adapters.clients_file import ClientRecord, ClientsFileError
from jackpot_grpc.config import Settings
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.edge import haproxy
from jackpot_grpc.edge.settings import (
    Backend,
    EdgeSettings,
    anonymous_limit_from_env,
    role_limits_from_env,
)

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")  # where Debian puts daemons


@dataclasses.dataclass(frozen=True)
class EdgePorts:
    """Where the processes behind the edge listen (loopback), from JACKPOT_EDGE_*."""

    grpc_port: int  # the first server's; server i listens on grpc_port + i
    rest_port: int  # the gateway's
    stats_host: str
    stats_port: int
    config_dir: Path

    @classmethod
    def from_env(cls, env: dict[str, str], settings: Settings) -> EdgePorts:
        def port(name: str, default: int) -> int:
            raw = env.get(name, "").strip()
            try:
                return int(raw) if raw else default
            except ValueError:
                raise ConfigError(f"{name} must be an integer, got {raw!r}") from None

        return cls(
            grpc_port=port("JACKPOT_EDGE_GRPC_PORT", settings.grpc.port + 10),
            rest_port=port("JACKPOT_EDGE_REST_PORT", settings.gateway.port + 10),
            stats_host=env.get("JACKPOT_EDGE_STATS_HOST", "").strip() or "127.0.0.1",
            stats_port=port("JACKPOT_EDGE_STATS_PORT", 8405),
            config_dir=Path(env.get("JACKPOT_EDGE_DIR", "").strip() or ".data/edge").absolute(),
        )


def bind(host: str, port: int) -> str:
    """HAProxy's bind address for a host as the settings spell it ("[::]", "0.0.0.0")."""
    bare = host.strip("[]")
    if ":" in bare:  # IPv6; "::" takes IPv4 too, as the service's own "[::]" does
        return f"ipv6@{bare}:{port}" + (" v4v6" if bare == "::" else "")
    return f"{bare}:{port}"


def edge_settings(settings: Settings, ports: EdgePorts, servers: int) -> EdgeSettings:
    env = dict(os.environ)
    role_limits = role_limits_from_env(env)
    anonymous = anonymous_limit_from_env(env)
    if settings.auth.open_mode and not env.get("JACKPOT_EDGE_LIMIT_ANONYMOUS", "").strip():
        # No clients (development): everyone is anonymous, so give them a game's budget.
        anonymous = role_limits["game"]
    return EdgeSettings(
        grpc_bind=bind(settings.grpc.host, settings.grpc.port),
        rest_bind=bind(settings.gateway.host, settings.gateway.port),
        stats_bind=bind(ports.stats_host, ports.stats_port),
        servers=tuple(
            Backend("127.0.0.1", ports.grpc_port + i, settings.health.port + i)
            for i in range(servers)
        ),
        gateways=(f"127.0.0.1:{ports.rest_port}",),
        config_dir=ports.config_dir,
        role_limits=role_limits,
        anonymous=anonymous,
    )


def haproxy_executable() -> str:
    found = shutil.which("haproxy", path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))
    if found is None:
        raise ConfigError("haproxy is not installed (make edge-tools)")
    return found


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _clients(path: Path | None) -> list[ClientRecord] | None:
    """The file's valid clients (an invalid entry admits nobody, as on the server); None
    when it cannot be read at all (the running config is kept)."""
    if path is None:
        return []
    try:
        document = clients_file.read(path)
    except ClientsFileError as exc:
        log.error("edge: the clients file cannot be read; keeping the running config: %s", exc)
        return None
    for entry in document.invalid:
        log.error("edge: clients file %s", entry)
    return document.records


def _accepted(executable: str, config: Path) -> bool:
    checked = subprocess.run([executable, "-c", "-q", "-f", str(config)], capture_output=True)
    if checked.returncode != 0:
        log.error("edge: haproxy refused the new config: %s", checked.stderr.decode()[-2000:])
    return checked.returncode == 0


def run_edge(settings: Settings, edge: EdgeSettings, poll_seconds: float = POLL_SECONDS) -> int:
    """Run HAProxy until SIGTERM/SIGINT; reload it on every change of the clients file."""
    executable = haproxy_executable()
    clients = _clients(settings.auth.clients_file) or []
    config = haproxy.write(edge, clients)
    if not _accepted(executable, config):
        return 1
    master = subprocess.Popen(
        [executable, "-W", "-f", str(config), "-S", str(edge.config_dir / haproxy.MASTER_SOCKET)]
    )
    log.info("edge: haproxy (pid %d) on %s and %s", master.pid, edge.grpc_bind, edge.rest_bind)
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        seen = _stamp(settings.auth.clients_file)
        rendered = haproxy.render(edge, clients)
        while not stopping and master.poll() is None:
            time.sleep(poll_seconds)
            stamp = _stamp(settings.auth.clients_file)
            if stamp == seen:
                continue
            seen = stamp
            changed = _clients(settings.auth.clients_file)
            if changed is None or haproxy.render(edge, changed) == rendered:
                continue
            config = haproxy.write(edge, changed)
            if _accepted(executable, config):
                rendered, clients = haproxy.render(edge, changed), changed
                master.send_signal(signal.SIGUSR2)
                log.info("edge: clients file changed; haproxy reloaded")
            else:  # the files on disk go back to what runs, for the next reload or restart
                haproxy.write(edge, clients)
        if not stopping:
            log.error("edge: haproxy exited with %s", master.returncode)
            return 1
        # Soft stop: stop listening, let the connections held finish (hard-stop-after).
        master.send_signal(signal.SIGUSR1)
        try:
            master.wait(timeout=15)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
        return 0
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
