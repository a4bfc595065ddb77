"""What the gateway passes between HTTP and gRPC besides the message, as grpc-gateway does
(runtime/context.go, runtime/handler.go):

- `X-Forwarded-Host` (the request's, else its Host) goes to the service as metadata
  `x-forwarded-host`. `x-forwarded-for` carries one address, the caller's: the TCP peer,
  or, when the peer is a trusted proxy (JACKPOT_TRUSTED_PROXIES), the address it put in
  the request's `X-Forwarded-For` (peer_address.real_caller). Unlike grpc-gateway, which
  appends the peer to whatever the caller claimed, the gateway resolves the chain itself:
  the server then needs to trust only the gateway, and a garbage header never makes the
  caller vanish (the last good hop is sent instead). With JACKPOT_GATEWAY_TOKEN the
  gateway proves itself to the server (`jackpot-gateway-authorization`), so that the
  server believes it from any address.
- `Grpc-Timeout` (gRPC's wire format: up to 8 digits and a unit H, M, S, m, u or n) sets
  the call's deadline, bounded by the gateway's own maximum (JACKPOT_GATEWAY_MAX_TIMEOUT),
  which is also the deadline when the header is absent. A malformed value is a 400.
- The response's header metadata comes back as `Grpc-Metadata-<key>` headers and its
  trailers as `Grpc-Trailer-<key>` headers, on success and on error alike. (grpc-gateway
  sends trailers as HTTP trailers to a client that says `TE: trailers`; a unary reply is
  complete before the response starts, so here they are plain headers.) gRPC's reserved
  `grpc-*` keys stay inside; `-bin` values are base64, as gRPC carries them over HTTP/2.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping

from aiohttp import web
from multidict import CIMultiDictProxy

from jackpot_grpc.contract.metadata import FORWARDED_FOR, GATEWAY_AUTHORIZATION
from jackpot_grpc.gateway.http_errors import bad_request
from jackpot_grpc.transport.peer_address import (
    Caller,
    TrustedProxies,
    forwarded_entries,
    http_peer,
    real_caller,
)

GRPC_TIMEOUT = "Grpc-Timeout"
X_FORWARDED_FOR = "X-Forwarded-For"
X_FORWARDED_HOST = "X-Forwarded-Host"
METADATA_HEADER_PREFIX = "Grpc-Metadata-"
TRAILER_HEADER_PREFIX = "Grpc-Trailer-"
_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")
_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")

Metadata = Iterable[tuple[str, str | bytes]]


def call_timeout(headers: Mapping[str, str], maximum: float | None) -> float | None:
    """The call's deadline in seconds: Grpc-Timeout when it asks for less than `maximum`
    (None: no bound, and no deadline without the header)."""
    raw = headers.get(GRPC_TIMEOUT)
    if raw is None:
        return maximum
    match = _TIMEOUT.fullmatch(raw.strip())
    if match is None:
        raise bad_request(
            f"invalid Grpc-Timeout {raw!r}: up to 8 digits and a unit (H, M, S, m, u, n)",
            [(GRPC_TIMEOUT, "not a gRPC timeout")],
        )
    asked = int(match[1]) * _UNIT_SECONDS[match[2]]
    return asked if maximum is None else min(asked, maximum)


def http_caller(
    headers: CIMultiDictProxy[str], remote: str | None, trusted: TrustedProxies
) -> Caller:
    """The HTTP caller: the TCP peer, or whom a trusted proxy in front says it served."""
    claimed = forwarded_entries(headers.getall(X_FORWARDED_FOR, ()))
    return real_caller(http_peer(remote), claimed, trusted)


def forwarded_for(
    headers: Mapping[str, str], host: str | None, caller: Caller
) -> list[tuple[str, str]]:
    """`x-forwarded-host` (when gRPC can carry it) and `x-forwarded-for`: the caller's
    address, always (an `ipaddress` text, or the peer as aiohttp saw it)."""
    pairs: list[tuple[str, str]] = []
    forwarded_host = headers.get(X_FORWARDED_HOST) or host
    if forwarded_host and _HEADER_VALUE.fullmatch(forwarded_host):
        pairs.append((X_FORWARDED_HOST.lower(), forwarded_host))
    if _HEADER_VALUE.fullmatch(caller.address):
        pairs.append((FORWARDED_FOR, caller.address))
    return pairs


def gateway_credentials(token: str | None) -> list[tuple[str, str]]:
    """The gateway's own token for the server (JACKPOT_GATEWAY_TOKEN), if it has one."""
    return [(GATEWAY_AUTHORIZATION, f"Bearer {token}")] if token else []


def without_gateway_keys(metadata: Metadata) -> tuple[tuple[str, str | bytes], ...]:
    """The caller's metadata minus what only the gateway itself may say."""
    return tuple((k, v) for k, v in metadata if k not in (GATEWAY_AUTHORIZATION, FORWARDED_FOR))


def _header_value(key: str, value: str | bytes) -> str | None:
    if isinstance(value, bytes) or key.endswith("-bin"):
        raw = value if isinstance(value, bytes) else value.encode()
        return base64.b64encode(raw).decode()
    return value if _HEADER_VALUE.fullmatch(value) else None


def response_headers(initial: Metadata | None, trailing: Metadata | None) -> list[tuple[str, str]]:
    """`Grpc-Metadata-*` and `Grpc-Trailer-*` headers from a call's metadata."""
    headers: list[tuple[str, str]] = []
    for prefix, metadata in ((METADATA_HEADER_PREFIX, initial), (TRAILER_HEADER_PREFIX, trailing)):
        for key, value in metadata or ():
            if key.startswith("grpc-"):
                continue
            text = _header_value(key, value)
            if text is not None:
                headers.append((prefix + key, text))
    return headers


# The headers the handler found in the call's metadata, for whichever response goes out.
RESPONSE_METADATA = web.RequestKey("grpc_response_metadata", list)


async def add_response_metadata(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the call's Grpc-Metadata-*/Grpc-Trailer-* headers, on the
    success response and on the error one the error middleware renders alike."""
    for key, value in request.get(RESPONSE_METADATA, ()):
        response.headers.add(key, value)
