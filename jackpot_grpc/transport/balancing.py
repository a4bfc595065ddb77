"""Which servers a channel dials, and how the gateway spreads calls over them.

JACKPOT_GRPC_TARGET takes any gRPC target: `host:port` (one server), `dns:///name:port`
(every address the name resolves to; gRPC resolves again whenever a connection drops, at
most every 30 s, so the servers' max connection age lets new replicas be found), or a
list of addresses in gRPC's multi-address syntax (`ipv4:10.0.0.1:50051,10.0.0.2:50051`,
`ipv6:[::1]:50051,[::1]:50052`). A plain
comma-separated list of IP addresses is accepted as a shorthand for the latter.

The gateway's channel balances with gRPC's own `round_robin` policy and client-side health
checking (gRPC A17): each connection watches grpc.health.v1 (service "", the server's
readiness), and a server that says NOT_SERVING (database lost, draining) or whose
connection failed gets no calls until it is SERVING again.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Final

# Readiness: "" follows the database on the server (entrypoints.database_health_probe).
HEALTH_CHECK_SERVICE: Final = ""

BALANCED_SERVICE_CONFIG: Final[dict[str, Any]] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": HEALTH_CHECK_SERVICE},
}

# Schemes whose target may name several addresses itself.
_LIST_SCHEMES: Final = ("ipv4:", "ipv6:")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _list_target(raw: str) -> str:
    """`a:1,b:2` (IP literals) as gRPC's `ipv4:a:1,b:2` / `ipv6:[a]:1,[b]:2`."""
    parts = [part.strip() for part in raw.split(",")]
    hosts: list[str] = []
    for part in parts:
        host, sep, port = part.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not port.isdigit() or not _is_ip(host):
            raise ValueError(
                f"JACKPOT_GRPC_TARGET: {part!r} in a list is not an IP address with a port;"
                " for names use dns:///<name>:<port> (every address it resolves to)"
            )
        hosts.append(host)
    versions = {ipaddress.ip_address(host).version for host in hosts}
    if len(versions) > 1:
        raise ValueError("JACKPOT_GRPC_TARGET: a list mixes IPv4 and IPv6 addresses")
    return ("ipv6:" if versions == {6} else "ipv4:") + ",".join(parts)


def channel_target(raw: str) -> str:
    """The gRPC target for JACKPOT_GRPC_TARGET (a plain address list in gRPC's syntax);
    ValueError naming the setting when it cannot be one."""
    target = raw.strip()
    if not target:
        raise ValueError("JACKPOT_GRPC_TARGET is empty")
    if "," in target and not target.startswith(_LIST_SCHEMES):
        return _list_target(target)
    return target


def balanced_channel_options() -> list[tuple[str, Any]]:
    """Channel options for round_robin over every address of the target, health-checked."""
    return [("grpc.service_config", json.dumps(BALANCED_SERVICE_CONFIG))]
