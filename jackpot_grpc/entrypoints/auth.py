"""Authentication and authorisation of every jackpot RPC, before the handler runs.

A caller proves who it is with a bearer token (`authorization: Bearer <token>` metadata)
or, when GRPC_TLS_CLIENT_CA is set, with its client certificate (subject CN or a SAN,
mapped to a client by the clients file); a token, when sent, decides. Each method needs
one of the roles in domain/roles.py; a jackpot method listed nowhere is refused to everyone.
grpc.health.v1 and reflection are not intercepted. In open mode (no clients configured)
nothing is checked.

Answers: no or unknown credentials → UNAUTHENTICATED; a known client without the role →
PERMISSION_DENIED; a peer that keeps failing → RESOURCE_EXHAUSTED for a while
(auth_throttle.py). Nothing reaches the handler, so nothing is written. Each failure is
logged at WARNING (peer, method, reason; never the token) and counted by reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
import signal
from collections.abc import Callable, Collection, Sequence
from typing import Any

import grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.domain.errors import (
    DomainError,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)
from jackpot_grpc.domain.roles import may_call, roles_for
from jackpot_grpc.entrypoints.auth_throttle import FailureThrottle
from jackpot_grpc.entrypoints.client_registry import ClientRegistry
from jackpot_grpc.entrypoints.errors import to_status
from jackpot_grpc.entrypoints.identity import Client, acting_as
from jackpot_grpc.entrypoints.interceptors import (
    Behavior,
    Continuation,
    WrappedUnaryHandlers,
    method_name,
)
from jackpot_grpc.metrics import RequestMetrics
from jackpot_grpc.peer_metadata import FORWARDED_FOR

log = logging.getLogger(__name__)

_CERT_PROPERTIES = ("x509_common_name", "x509_subject_alternative_name")


def bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def certificate_subjects(context: grpc.aio.ServicerContext) -> list[str]:
    """The CN and SANs of a verified client certificate (empty without mTLS)."""
    properties = context.auth_context() or {}
    return [
        value.decode(errors="replace")
        for name in _CERT_PROPERTIES
        for value in properties.get(name, ())
    ]


def peer_key(peer: str, metadata: Sequence[tuple[str, Any]] | None) -> str:
    """The caller's address without its port (and the gateway's caller, via loopback)."""
    kind, _, rest = peer.partition(":")
    address = rest.rsplit(":", 1)[0] if kind in ("ipv4", "ipv6") else rest
    try:
        loopback = ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        loopback = kind == "unix"
    if loopback:
        forwarded = next((v for k, v in metadata or () if k == FORWARDED_FOR), None)
        if isinstance(forwarded, str) and forwarded:
            # The gateway appends the address it saw last (grpc-gateway's convention);
            # earlier entries are whatever the caller claimed, so only the last counts.
            caller = forwarded.rsplit(",", 1)[-1].strip()
            return f"{address} for {caller[:64]}"
    return address


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        registry: ClientRegistry,
        throttle: FailureThrottle,
        services: Collection[str],
        count_failure: Callable[[str], None],
    ) -> None:
        self._registry = registry
        self._throttle = throttle
        self._prefixes = tuple(f"/{s}/" for s in services)
        self._count_failure = count_failure
        self._guarded_handlers = WrappedUnaryHandlers(self._guarded)

    @property
    def registry(self) -> ClientRegistry:
        """The clients in use (the health port shows its state and metrics)."""
        return self._registry

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        full_name: str = handler_call_details.method
        if handler is None or self._registry.open or not full_name.startswith(self._prefixes):
            return handler
        if handler.unary_unary is None:  # nothing streams today; never let one through
            log.error("refusing %s: only unary methods are guarded", full_name)
            return None
        return self._guarded_handlers.get(full_name, handler)

    def _guarded(self, full_name: str, behavior: Behavior) -> Behavior:
        method = method_name(full_name)

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                client = self.authenticate(context, method)
            except DomainError as exc:
                await context.abort_with_status(to_status(exc))
                raise  # unreachable: abort_with_status raises
            with acting_as(client):
                response = behavior(request, context)
                if inspect.isawaitable(response):
                    response = await response
                return response

        return guarded

    def authenticate(self, context: grpc.aio.ServicerContext, method: str) -> Client:
        metadata = context.invocation_metadata()
        peer = peer_key(context.peer() or "", metadata)
        if self._throttle.blocked(peer):
            self._count_failure("throttled")  # not logged: the block itself was
            raise RateLimited("too many failed authentications from this address; retry later")
        self._registry.refresh()
        token = bearer_token(metadata)
        if token is not None:
            client, reason = self._registry.by_token(token), "unknown_token"
        else:
            subjects = certificate_subjects(context)
            client = self._registry.by_certificate(subjects)
            reason = "unknown_certificate" if subjects else "missing_credentials"
        if client is None:
            self._fail(peer, method, reason)
            if self._throttle.failed(peer):
                log.warning(
                    "auth: peer %s refused for %.0f s after %d failures in %.0f s",
                    peer,
                    self._throttle.block_seconds,
                    self._throttle.limit,
                    self._throttle.window,
                )
            raise Unauthenticated(
                "this call needs credentials: 'authorization: Bearer <token>' or a client"
                " certificate of a known client"
                if reason == "missing_credentials"
                else "credentials not recognised"
            )
        if not may_call(client.roles, method):
            self._fail(peer, method, "forbidden", client.name)
            raise PermissionDenied(
                f"client {client.name!r} may not call {method}"
                f" (needs one of the roles: {', '.join(roles_for(method)) or 'none'})"
            )
        return client

    def _fail(self, peer: str, method: str, reason: str, client: str | None = None) -> None:
        self._count_failure(reason)
        log.warning(
            "auth failure: peer=%s method=%s reason=%s%s",
            peer,
            method,
            reason,
            f" client={client}" if client else "",
        )


def build_auth_interceptor(
    settings: Settings, metrics: RequestMetrics, services: Collection[str]
) -> AuthInterceptor:
    """The interceptor for a server built from `settings`; it reloads the clients file on
    SIGHUP (when the loop runs on the main thread, as `jackpot serve`'s does)."""
    registry = ClientRegistry(settings.clients_file, settings.admin_token)
    throttle = FailureThrottle(
        settings.auth_failure_limit, settings.auth_failure_window, settings.auth_block_seconds
    )
    if not registry.open:
        with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, registry.reload)
    return AuthInterceptor(registry, throttle, services, metrics.auth_failure)
