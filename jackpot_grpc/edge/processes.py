"""What `jackpot run --edge` starts: the servers and the gateway on loopback ports behind
the edge (JACKPOT_EDGE_*), the edge on the public GRPC_PORT and REST_PORT. The health
ports stay where the settings put them (HEALTH_PORT, then one more per server), direct."""

from __future__ import annotations

import os
from collections.abc import Callable

from jackpot_grpc.config import LOOPBACK, Settings
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.edge.runner import EdgePorts


def edge_children(
    settings: Settings, servers: int, command: Callable[..., list[str]]
) -> tuple[list[list[str]], list[dict[str, str]]]:
    """The child commands and each one's environment overrides."""
    if settings.tls.cert_file is not None:
        # HAProxy would have to terminate TLS, with the certificate the server has.
        raise ConfigError("jackpot run --edge does not terminate TLS yet: unset GRPC_TLS_CERT")
    if servers < 1:
        raise ConfigError(f"--workers must be at least 1, got {servers}")
    ports = EdgePorts.from_env(dict(os.environ), settings)
    behind = [
        {
            "GRPC_HOST": LOOPBACK,
            "GRPC_PORT": str(ports.grpc_port + i),
            "HEALTH_PORT": str(settings.health.port + i),
        }
        for i in range(servers)
    ]
    gateway = {
        "REST_HOST": LOOPBACK,
        "REST_PORT": str(ports.rest_port),
        "JACKPOT_GRPC_TARGET": f"{LOOPBACK}:{ports.grpc_port}",
    }
    commands = [command("serve", "--no-migrate")] * servers
    commands += [command("gateway"), command("edge", "--servers", str(servers))]
    return commands, [*behind, gateway, {}]
