"""gRPC calls from operator commands: a channel per command, errors described for people."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from jackpot_grpc.client.service_config import channel_options
from jackpot_grpc.config import Settings
from jackpot_grpc.security.secret_rules import require_long_token
from jackpot_grpc.transport.tls import open_channel

STATUS_DETAILS_KEY = "grpc-status-details-bin"


class BearerToken(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Sends `authorization: Bearer <token>` with every call that carries none of its own."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()))
        if "authorization" not in metadata:
            metadata.add(*self._header)
        return await continuation(client_call_details._replace(metadata=metadata), request)


@contextlib.asynccontextmanager
async def channel(
    settings: Settings, target: str, *, keyed_writes: bool = False
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel for one command: TLS when GRPC_TLS_CA is set, as every client of ours; this
    client's token (JACKPOT_TOKEN) on every call; and the retry service config
    (jackpot_grpc/client/service_config.json): reads are retried on UNAVAILABLE /
    RESOURCE_EXHAUSTED, and writes too when the command says every write it sends carries
    an idempotency key (`keyed_writes`)."""
    token = settings.auth.client_token
    require_long_token("JACKPOT_TOKEN", token)  # could never be a valid token: say so now
    interceptors = [BearerToken(token)] if token else []
    options = channel_options(keyed_writes=keyed_writes)
    async with open_channel(settings.tls, target, interceptors, options) as chan:
        yield chan


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(field, description) pairs from the google.rpc.BadRequest detail, if any."""
    found: list[tuple[str, str]] = []
    for key, value in error.trailing_metadata() or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):  # False for any other kind of detail
                found.extend((v.field, v.description) for v in bad.field_violations)
    return found


def describe_error(error: grpc.aio.AioRpcError, options: Mapping[str, str] | None = None) -> str:
    """The status and each field violation; with `options` (field -> the command's option
    that sets it), each violation names the option too: `reserve_rate: ... (--reserve-rate)`."""
    text = f"{error.code().name}: {error.details() or ''}".rstrip(": ")
    violations = field_violations(error)
    if violations:
        named = options or {}
        text += (
            " ["
            + "; ".join(
                f"{f}: {d}" + (f" ({named[f]})" if f in named else "") for f, d in violations
            )
            + "]"
        )
    return text
