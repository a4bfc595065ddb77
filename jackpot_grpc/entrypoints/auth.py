"""Authentication and authorisation of every jackpot RPC, before the handler runs (the call
interceptor, entrypoints/interceptors.py, asks the Authenticator here).

A caller proves who it is with a bearer token (`authorization: Bearer <token>` metadata)
or, when GRPC_TLS_CLIENT_CA is set, with its client certificate (subject CN or a SAN,
mapped to a client by the clients file); a token, when sent, decides. Each method needs
one of the roles in domain/roles.py; a jackpot method listed nowhere is refused to everyone.
grpc.health.v1 and reflection are not intercepted. In open mode (no clients configured)
nothing is checked.

Answers: no or unknown credentials → UNAUTHENTICATED; a known client without the role →
PERMISSION_DENIED; a caller that keeps failing → RESOURCE_EXHAUSTED for a while
(jackpot_grpc.security.failure_throttle). Nothing reaches the handler, so nothing is written. Each
failure is logged at WARNING (caller, method, reason; never the token) and counted by reason.

The caller is the transport peer, or the address in `x-forwarded-for` when the peer is a
trusted proxy: listed in JACKPOT_TRUSTED_PROXIES (default: loopback), or a client with the
gateway role, proven by `jackpot-gateway-authorization` metadata or its certificate
(docs/SECURITY.md, "Who is believed about whose address").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.contract.metadata import FORWARDED_FOR, GATEWAY_AUTHORIZATION
from jackpot_grpc.domain.errors import (
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)
from jackpot_grpc.domain.roles import GATEWAY_ROLE, may_call, roles_for
from jackpot_grpc.entrypoints.client_registry import ClientRegistry
from jackpot_grpc.entrypoints.identity import Client
from jackpot_grpc.observability.metrics import RequestMetrics
from jackpot_grpc.security.failure_throttle import FailureThrottle
from jackpot_grpc.transport.peer_address import (
    LOOPBACK_PROXIES,
    Caller,
    TrustedProxies,
    forwarded_entries,
    grpc_peer,
    real_caller,
)

log = logging.getLogger(__name__)

_CERT_PROPERTIES = ("x509_common_name", "x509_subject_alternative_name")


def _bearer(value: object) -> str | None:
    """The token of one `Bearer <token>` value, else None."""
    if isinstance(value, str):
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            token = _bearer(value)
            if token is not None:
                return token
    return None


def read_metadata(
    metadata: Sequence[tuple[str, Any]] | None,
) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(bearer_token, gateway_token, the x-forwarded-for values) in one pass."""
    token: str | None = None
    gateway: str | None = None
    forwarded: list[str] = []
    for key, value in metadata or ():
        if key == "authorization":
            if token is None:
                token = _bearer(value)
        elif key == GATEWAY_AUTHORIZATION:
            if gateway is None:
                gateway = _bearer(value)
        elif key == FORWARDED_FOR and isinstance(value, str):
            forwarded.append(value)
    return token, gateway, tuple(forwarded)


def certificate_subjects(context: grpc.aio.ServicerContext) -> list[str]:
    """The CN and SANs of a verified client certificate (empty without mTLS)."""
    properties = context.auth_context() or {}
    return [
        value.decode(errors="replace")
        for name in _CERT_PROPERTIES
        for value in properties.get(name, ())
    ]


def gateway_token(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The token a gateway proves itself with, apart from its caller's `authorization`."""
    return bearer_token(
        [("authorization", v) for k, v in metadata or () if k == GATEWAY_AUTHORIZATION]
    )


def caller_of(
    peer: str,
    metadata: Sequence[tuple[str, Any]] | None,
    trusted: TrustedProxies = LOOPBACK_PROXIES,
    *,
    vouched: bool = False,
) -> Caller:
    """Who called: the transport peer, or the caller a trusted proxy forwarded for
    (peer_address.real_caller); `vouched`: the peer proved it has the gateway role."""
    forwarded = [v for k, v in metadata or () if k == FORWARDED_FOR and isinstance(v, str)]
    return real_caller(grpc_peer(peer), forwarded_entries(forwarded), trusted, vouched=vouched)


# Bounds of the per-process caches below: past them a cache starts over (memory stays small
# whatever callers send).
_CACHE_LIMIT = 4096


class Authenticator:
    """Who calls a jackpot method, and whether they may: the call interceptor
    (entrypoints/interceptors.py) asks before the handler runs.

    What is the same for every call of one connection or one client is worked out once:
    the caller behind a peer and its forwarded-for chain (parsing addresses is most of
    this check's cost), and whether a set of roles may call a method."""

    def __init__(
        self,
        registry: ClientRegistry,
        throttle: FailureThrottle,
        count_failure: Callable[[str], None],
        trusted_proxies: TrustedProxies = LOOPBACK_PROXIES,
        *,
        client_certificates: bool = True,
    ) -> None:
        self._registry = registry
        self._trusted_proxies = trusted_proxies
        self._throttle = throttle
        self._count_failure = count_failure
        # Without GRPC_TLS_CLIENT_CA no client certificate is ever verified: no need to ask.
        self._client_certificates = client_certificates
        self._callers: dict[tuple[str, tuple[str, ...], bool], Caller] = {}
        self._allowed: dict[tuple[frozenset[str], str], bool] = {}

    @property
    def registry(self) -> ClientRegistry:
        """The clients in use (the health port shows its state and metrics)."""
        return self._registry

    @property
    def open(self) -> bool:
        """No clients configured: nothing is checked."""
        return self._registry.open

    def authenticate(self, context: grpc.aio.ServicerContext, peer: str, method: str) -> Client:
        """The client calling `method` (its name) over `peer`; a DomainError to answer with
        when it is unknown, refused or throttled."""
        token, gateway, forwarded = read_metadata(context.invocation_metadata())
        self._registry.refresh()
        subjects = self._subjects(context)
        proxy, proxy_refusal = self._proxy(gateway, subjects)
        caller = self._caller(peer, forwarded, vouched=proxy is not None)
        key = caller.throttle_key
        if self._throttle.blocked(key):
            self._count_failure("throttled")  # not logged: the block itself was
            raise RateLimited("too many failed authentications from this address; retry later")
        if proxy_refusal is not None:
            self._refuse(caller, method, proxy_refusal)
        if token is not None:
            client, reason = self._registry.by_token(token), "unknown_token"
        elif caller.via is not None:
            # A forwarded call is the caller's: the proxy's own certificate never stands in
            # for it, so a REST caller without a token is unauthenticated.
            client, reason = None, "missing_credentials"
        else:
            client = self._registry.by_certificate(subjects)
            reason = "unknown_certificate" if subjects else "missing_credentials"
        if client is None:
            self._refuse(caller, method, reason)
        if not self._may_call(client.roles, method):
            self._fail(caller, method, "forbidden", client.name)
            raise PermissionDenied(
                f"client {client.name!r} may not call {method}"
                f" (needs one of the roles: {', '.join(roles_for(method)) or 'none'})"
            )
        return client

    def _subjects(self, context: grpc.aio.ServicerContext) -> list[str]:
        return certificate_subjects(context) if self._client_certificates else []

    def _caller(self, peer: str, forwarded: tuple[str, ...], *, vouched: bool) -> Caller:
        key = (peer, forwarded, vouched)
        caller = self._callers.get(key)
        if caller is None:
            if len(self._callers) >= _CACHE_LIMIT:
                self._callers.clear()
            caller = self._callers[key] = real_caller(
                grpc_peer(peer),
                forwarded_entries(forwarded),
                self._trusted_proxies,
                vouched=vouched,
            )
        return caller

    def _may_call(self, roles: frozenset[str], method: str) -> bool:
        key = (roles, method)
        allowed = self._allowed.get(key)
        if allowed is None:
            if len(self._allowed) >= _CACHE_LIMIT:
                self._allowed.clear()
            allowed = self._allowed[key] = may_call(roles, method)
        return allowed

    def _proxy(self, gateway: str | None, subjects: list[str]) -> tuple[Client | None, str | None]:
        """The gateway-role client the peer proved to be (by its gateway token, else by its
        certificate), and why a gateway token it sent is refused, if it is."""
        if gateway is not None:
            client = self._registry.by_token(gateway)
            if client is None:
                return None, "unknown_gateway_token"
            if GATEWAY_ROLE not in client.roles:
                return None, "not_a_gateway"
            return client, None
        client = self._registry.by_certificate(subjects)
        return (client if client is not None and GATEWAY_ROLE in client.roles else None), None

    def _refuse(self, caller: Caller, method: str, reason: str) -> NoReturn:
        self._fail(caller, method, reason)
        if self._throttle.failed(caller.throttle_key):
            log.warning(
                "auth: peer %s refused for %.0f s after %d failures in %.0f s",
                caller,
                self._throttle.block_seconds,
                self._throttle.limit,
                self._throttle.window,
            )
        if reason == "not_a_gateway":
            raise PermissionDenied(
                f"the {GATEWAY_AUTHORIZATION} metadata names a client without the"
                f" {GATEWAY_ROLE!r} role"
            )
        raise Unauthenticated(
            "this call needs credentials: 'authorization: Bearer <token>' or a client"
            " certificate of a known client"
            if reason == "missing_credentials"
            else "credentials not recognised"
        )

    def _fail(self, peer: Caller, method: str, reason: str, client: str | None = None) -> None:
        self._count_failure(reason)
        log.warning(
            "auth failure: peer=%s method=%s reason=%s%s",
            peer,
            method,
            reason,
            f" client={client}" if client else "",
        )


def build_authenticator(settings: Settings, metrics: RequestMetrics) -> Authenticator:
    """The authenticator of a server built from `settings`; it reloads the clients file on
    SIGHUP (when the loop runs on the main thread, as `jackpot serve`'s does)."""
    registry = ClientRegistry(settings.auth.clients_file, settings.auth.admin_token)
    throttle = FailureThrottle(
        settings.auth.failure_limit, settings.auth.failure_window, settings.auth.block_seconds
    )
    if not registry.open:
        with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, registry.reload)
    return Authenticator(
        registry,
        throttle,
        metrics.auth_failure,
        settings.auth.trusted_proxies,
        client_certificates=settings.tls.client_ca_file is not None,
    )
