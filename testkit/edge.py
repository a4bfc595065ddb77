"""`jackpot run --edge` under test: HAProxy in front of a server and a gateway, on free
local ports, with a clients file; and what the edge's Prometheus endpoint counts."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from jackpot_grpc.edge import haproxy
from jackpot_grpc.edge.settings import Backend, EdgeSettings, Limit
from testkit.ports import free_port
from testkit.processes import ServiceProcess, http_ok, service_env
from testkit.tools import require_tool

QUEUE_TIMEOUTS = re.compile(
    r'^haproxy_backend_http_responses_total\{proxy="jackpot_grpc",code="5xx"\} (\d+)',
    re.MULTILINE,
)
REFUSED = re.compile(
    r'^haproxy_backend_http_requests_total\{proxy="edge_refused_(\w+)"\} (\d+)', re.MULTILINE
)


class Edge(ServiceProcess):
    """The public ports are GRPC_PORT (`target`) and REST_PORT (`rest`)."""

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.env['REST_PORT']}"

    @property
    def stats(self) -> str:
        return f"http://127.0.0.1:{self.env['JACKPOT_EDGE_STATS_PORT']}"

    @property
    def config_dir(self) -> Path:
        return Path(self.env["JACKPOT_EDGE_DIR"])

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.stats}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def refused(self) -> dict[str, int]:
        """Refusals by backend (grpc_rate, rest_in_flight, ...), from the edge's /metrics."""
        return {kind: int(n) for kind, n in REFUSED.findall(self.metrics())}

    def queue_timeouts(self) -> int:
        """gRPC calls that waited for a server past the queue timeout (answered
        RESOURCE_EXHAUSTED), or that a server failed (UNAVAILABLE): the backend's 5xx."""
        return sum(int(n) for n in QUEUE_TIMEOUTS.findall(self.metrics()))


def edge_process(database_url: str, log_dir: Path, clients: Path, **env: str) -> Edge:
    require_tool("haproxy", "make edge-tools")
    settings = service_env(
        database_url,
        log_dir,
        JACKPOT_CLIENTS_FILE=str(clients),
        JACKPOT_EDGE_GRPC_PORT=str(free_port()),
        JACKPOT_EDGE_REST_PORT=str(free_port()),
        JACKPOT_EDGE_STATS_PORT=str(free_port()),
        JACKPOT_EDGE_DIR=str(log_dir / "edge"),
        **env,
    )
    return Edge(["run", "--edge"], settings, log_dir, name="run-edge")


@contextlib.contextmanager
def running_edge(database_url: str, log_dir: Path, clients: Path, **env: str) -> Iterator[Edge]:
    """`jackpot run --edge`, SERVING through the edge inside the block, stopped after it."""
    edge = edge_process(database_url, log_dir, clients, **env)
    try:
        edge.start(timeout=60)
        yield edge
    finally:
        edge.stop()


@dataclass
class Haproxy:
    """HAProxy alone, with the generated config, in front of servers started elsewhere."""

    settings: EdgeSettings

    @property
    def target(self) -> str:
        return self.settings.grpc_bind

    def server_stats(self) -> dict[str, dict[str, str]]:
        """The stats page's CSV row of each gRPC server (s1, s2, ...): status, stot, ..."""
        url = f"http://{self.settings.stats_bind}/stats;csv"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode().lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {r["svname"]: r for r in rows if r["pxname"] == "jackpot_grpc"}


@contextlib.contextmanager
def haproxy_in_front(
    servers: Sequence[ServiceProcess], config_dir: Path, tool: str | None = None
) -> Iterator[Haproxy]:
    """HAProxy (`tool`, else found or skipped) with the generated config in front of
    `servers`, every caller on the anonymous budget, made large enough never to bind;
    yielded once every server is UP, stopped after."""
    tool = tool or require_tool("haproxy", "make edge-tools")
    settings = EdgeSettings(
        grpc_bind=f"127.0.0.1:{free_port()}",
        rest_bind=f"127.0.0.1:{free_port()}",
        stats_bind=f"127.0.0.1:{free_port()}",
        servers=tuple(Backend("127.0.0.1", s.grpc_port, s.health_port) for s in servers),
        gateways=(f"127.0.0.1:{free_port()}",),
        config_dir=config_dir,
        anonymous=Limit(rate=100_000, in_flight=10_000),
    )
    config = haproxy.write(settings, [])
    with (config_dir / "haproxy.out").open("wb") as output:
        proc = subprocess.Popen(
            [tool, "-W", "-f", str(config)], stdout=output, stderr=subprocess.STDOUT
        )
    front = Haproxy(settings)
    try:
        deadline = time.monotonic() + 20
        while not (
            http_ok(f"http://{settings.stats_bind}/stats")
            and all(r["status"] == "UP" for r in front.server_stats().values())
        ):
            assert proc.poll() is None, (config_dir / "haproxy.out").read_text()
            assert time.monotonic() < deadline, front.server_stats()
            time.sleep(0.1)
        yield front
    finally:
        proc.terminate()
        proc.wait(10)
