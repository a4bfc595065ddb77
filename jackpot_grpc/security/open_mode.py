"""Open mode: with no clients configured the service lets every caller in, so it must
listen on this machine only, unless JACKPOT_ALLOW_OPEN=1 says otherwise on purpose."""

from __future__ import annotations

import logging

from jackpot_grpc.config import Settings
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.transport.peer_address import parse_address

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    # A wildcard ("", "[::]", "0.0.0.0"; "*" is no address) or a name is not loopback.
    address = parse_address(host)
    return address is not None and address.is_loopback


def check_listening(settings: Settings, hosts: dict[str, str]) -> None:
    """Refuse to start open on a non-loopback address; say loudly that it runs open.

    `hosts` maps each setting's name (GRPC_HOST...) to the address it will listen on.
    """
    if not settings.auth.open_mode:
        return
    exposed = {name: host for name, host in hosts.items() if not is_loopback(host)}
    if exposed and not settings.auth.allow_open:
        listed = ", ".join(f"{name}={host!r}" for name, host in exposed.items())
        raise ConfigError(
            f"refusing to start: no clients are configured (JACKPOT_CLIENTS_FILE,"
            f" JACKPOT_ADMIN_TOKEN), so anyone could call every method, and {listed} would"
            f" listen beyond this machine. Configure clients (docs/SECURITY.md), listen on"
            f" 127.0.0.1, or set JACKPOT_ALLOW_OPEN=1 to run open anyway."
        )
    log.warning(
        "no clients configured (JACKPOT_CLIENTS_FILE, JACKPOT_ADMIN_TOKEN): running OPEN,"
        " every caller may call every method; listening on %s (development only)",
        ", ".join(f"{name}={host}" for name, host in hosts.items()),
    )


def check_server(settings: Settings) -> None:
    """For the gRPC server process: its gRPC and health/metrics ports."""
    check_listening(
        settings, {"GRPC_HOST": settings.grpc.host, "HEALTH_HOST": settings.health.host}
    )
