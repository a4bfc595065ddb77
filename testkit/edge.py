"""`jackpot run --edge` under test: HAProxy in front of a server and a gateway, on free
local ports, with a clients file; and what the edge's Prometheus endpoint counts."""

from __future__ import annotations

import contextlib
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from testkit.ports import free_port
from testkit.processes import ServiceProcess, service_env
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
