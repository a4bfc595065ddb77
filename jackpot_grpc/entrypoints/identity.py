"""Who is calling: the authenticated client of the current RPC, for handlers to read.

The call interceptor (entrypoints/interceptors.py) sets it around each handler call. In open
mode(no clients configured) nobody is authenticated: `current_client()` is None and
`current_client_name()` is "anonymous".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass

from jackpot_grpc.security.client_names import ANONYMOUS as ANONYMOUS


@dataclass(frozen=True)
class Client:
    name: str
    roles: frozenset[str]


_current: ContextVar[Client | None] = ContextVar("jackpot_client", default=None)


def current_client() -> Client | None:
    return _current.get()


def current_client_name() -> str:
    client = _current.get()
    return ANONYMOUS if client is None else client.name


def act_as(client: Client | None) -> Token[Client | None]:
    """`client` is the current client until `stop_acting` (the call path's cheaper form of
    `acting_as`)."""
    return _current.set(client)


def stop_acting(token: Token[Client | None]) -> None:
    _current.reset(token)


@contextmanager
def acting_as(client: Client | None) -> Iterator[None]:
    """`client` is the current client inside the block (and only there)."""
    token = _current.set(client)
    try:
        yield
    finally:
        _current.reset(token)
