"""Whether a gRPC target names this host's own instance: a loopback host (`localhost`,
`127.0.0.1`, `[::1]`, any 127.x address) at this environment's GRPC_PORT. Only then can the
instance's other ports (HEALTH_PORT) be taken from the same environment."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def host_and_port(target: str) -> tuple[str, int] | None:
    """(host, port) of a plain `host:port` target (`[v6]:port` too); None for any other
    form (`dns:///...`, a list, no port)."""
    if "," in target or "/" in target:
        return None
    try:
        parts = urlsplit(f"//{target}")
        port = parts.port
    except ValueError:  # a port that is not a number, unbalanced brackets
        return None
    if parts.hostname is None or port is None:
        return None
    return parts.hostname, port


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local_instance(target: str, grpc_port: int) -> bool:
    found = host_and_port(target)
    return found is not None and is_loopback(found[0]) and found[1] == grpc_port
