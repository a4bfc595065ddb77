"""Optional TLS for the gRPC port and for the gateway's channel to it.

Server: GRPC_TLS_CERT and GRPC_TLS_KEY (PEM files) turn TLS on. Clients (the gateway, the
CLI): GRPC_TLS_CA is the CA that signed the server's certificate; with it set, channels use
TLS. Admin calls are protected by the bearer token, not by client certificates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from jackpot_grpc.config import Settings


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise SystemExit("TLS needs both GRPC_TLS_CERT and GRPC_TLS_KEY")
    pair = (settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())
    return grpc.ssl_server_credentials([pair])


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    if settings.tls_ca_file is None:
        return None
    return grpc.ssl_channel_credentials(root_certificates=settings.tls_ca_file.read_bytes())


def open_channel(
    settings: Settings, target: str, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target`, with TLS when GRPC_TLS_CA is set."""
    credentials = channel_credentials(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    return grpc.aio.secure_channel(target, credentials, options=list(options))
