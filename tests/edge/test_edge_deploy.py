"""The edge's systemd unit and drop-ins agree: the server and gateway listen where the
edge sends calls, the edge takes the public ports, and the unit's command is valid."""

from __future__ import annotations

import subprocess
from pathlib import Path

from jackpot_grpc.config import Settings
from jackpot_grpc.edge import haproxy
from jackpot_grpc.edge.runner import EdgePorts, edge_settings
from testkit.deploy_files import assert_parses
from testkit.paths import PROJECT_ROOT
from testkit.tools import require_tool

SYSTEMD = PROJECT_ROOT / "deploy" / "systemd"


def environment(*paths: Path) -> dict[str, str]:
    """Environment= of the units' [Service] sections, later files overriding earlier ones."""
    env: dict[str, str] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line.startswith("Environment="):
                key, value = line.removeprefix("Environment=").split("=", 1)
                env[key] = value
    return env


def test_the_units_place_server_and_gateway_where_the_edge_sends_calls(tmp_path: Path) -> None:
    edge_unit = SYSTEMD / "jackpot-edge.service"
    edge_env = environment(edge_unit)
    server = Settings.from_env(
        environment(SYSTEMD / "jackpot.service", SYSTEMD / "edge/jackpot.service.d/edge.conf")
    )
    gateway = Settings.from_env(
        environment(
            SYSTEMD / "jackpot-gateway.service",
            SYSTEMD / "edge/jackpot-gateway.service.d/edge.conf",
        )
    )
    public = Settings.from_env(edge_env)
    ports = EdgePorts.from_env({**edge_env, "JACKPOT_EDGE_DIR": str(tmp_path)}, public)
    edge = edge_settings(public, ports, servers=1)
    # The edge takes the public ports; the server and gateway are behind it on loopback.
    assert (public.grpc.port, public.gateway.port) == (50051, 3000)
    assert edge.grpc_bind.endswith(":50051 v4v6") and edge.rest_bind == "0.0.0.0:3000"
    assert (server.grpc.host, server.grpc.port) == ("127.0.0.1", ports.grpc_port)
    assert (gateway.gateway.host, gateway.gateway.port) == ("127.0.0.1", ports.rest_port)
    assert gateway.grpc.target == f"127.0.0.1:{server.grpc.port}"
    assert edge.servers[0].health_port == server.health.port  # the health port stays direct
    args = assert_parses(edge_unit.read_text().split("ExecStart=")[1].splitlines()[0])
    assert (args.command, args.servers) == ("edge", 1)
    tool = require_tool("haproxy", "make edge-tools")
    config = haproxy.write(edge, [])
    checked = subprocess.run([tool, "-c", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
