"""Optional TLS for the gRPC port and for the gateway's channel to it.

Server: GRPC_TLS_CERT and GRPC_TLS_KEY (PEM files) turn TLS on; GRPC_TLS_CLIENT_CA adds
mTLS: every client must then present a certificate signed by that CA, and its subject
(CN or a SAN) names a client in the clients file (entrypoints/auth.py). Clients (the
gateway, the CLI, the bench): GRPC_TLS_CA is the CA that signed the server's certificate;
with it set, channels use TLS, and present GRPC_TLS_CLIENT_CERT / GRPC_TLS_CLIENT_KEY when
those are set. See docs/SECURITY.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from jackpot_grpc.config import TlsSettings
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.security.secret_rules import require_private
from jackpot_grpc.transport.balancing import channel_target


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials | None:
    if tls.client_ca_file is not None and tls.cert_file is None:
        raise ConfigError("GRPC_TLS_CLIENT_CA (mTLS) needs TLS: set GRPC_TLS_CERT and GRPC_TLS_KEY")
    if tls.cert_file is None and tls.key_file is None:
        return None
    if tls.cert_file is None or tls.key_file is None:
        raise ConfigError("TLS needs both GRPC_TLS_CERT and GRPC_TLS_KEY")
    require_private(tls.key_file, "GRPC_TLS_KEY")
    pair = (tls.key_file.read_bytes(), tls.cert_file.read_bytes())
    if tls.client_ca_file is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair],
        root_certificates=tls.client_ca_file.read_bytes(),
        require_client_auth=True,
    )


def channel_credentials(tls: TlsSettings) -> grpc.ChannelCredentials | None:
    if tls.ca_file is None:
        return None
    cert, key = tls.client_cert_file, tls.client_key_file
    if (cert is None) != (key is None):
        raise ConfigError(
            "a client certificate needs both GRPC_TLS_CLIENT_CERT and GRPC_TLS_CLIENT_KEY"
        )
    if key is not None:
        require_private(key, "GRPC_TLS_CLIENT_KEY")
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca_file.read_bytes(),
        private_key=key.read_bytes() if key is not None else None,
        certificate_chain=cert.read_bytes() if cert is not None else None,
    )


def open_channel(
    tls: TlsSettings,
    target: str,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target` (an address list too), with TLS when GRPC_TLS_CA is set."""
    target = channel_target(target)
    credentials = channel_credentials(tls)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=list(options), interceptors=interceptors)
    return grpc.aio.secure_channel(
        target, credentials, options=list(options), interceptors=interceptors
    )
