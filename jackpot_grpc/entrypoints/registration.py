"""The services registered on a server: generic handlers only, GetPools answered from bytes.

GetPools is read far more often than the pools change, so the servicer keeps its reply
serialised (entrypoints/pools_reply.py) and the method's handler sends those bytes as they
are: the generated handler's response serializer is replaced by one that passes bytes
through. Everything else is the generated registration: the same names, request
deserializers and the same handlers, so interceptors, reflection and the REST gateway (a
gRPC client) see no difference.

Every service goes in as generic handlers only, never as "registered methods": grpc.aio's
accept loop keeps one pending request per registered method and runs `asyncio.wait` over
all of them for every call it accepts: 17 futures here (12 JackpotService methods, 3 of
health, 1 of reflection and the generic one), 20-28 µs of the event loop's CPU per call,
Check included (BENCHMARKS.md). Generic handlers are looked up in a dict, once per method (the
interceptor caches what it wraps).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

import grpc
from jackpot.v1 import jackpot_pb2_grpc

# Methods whose servicer returns the response already serialised.
SERIALISED_REPLIES = frozenset({"GetPools"})


def as_is(reply: Any) -> bytes:
    """The response serializer of a method answered in bytes; a message (a servicer that
    built one anyway) is still serialised, so a wrong return type cannot corrupt a reply."""
    if isinstance(reply, bytes):
        return reply
    serialised: bytes = reply.SerializeToString()
    return serialised


class GenericOnly:
    """Stands in for the server while a generated add_*_to_server runs: its generic
    handlers reach the server, its registered methods do not (see above)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        """The same handlers the generic ones hold: nothing more to add."""


class _Recorder:
    """Stands in for the server while the generated add_*_to_server runs, keeping the
    handlers it would register."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        """The generic form of the same handlers: the registered ones below are what we keep."""

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self.service, self.handlers = service, dict(handlers)


def add_jackpot_service(
    servicer: jackpot_pb2_grpc.JackpotServiceServicer,
    server: grpc.aio.Server,
    serialised: Collection[str] = SERIALISED_REPLIES,
) -> dict[str, grpc.RpcMethodHandler]:
    """Register `servicer` as the generated code does, but with the methods in `serialised`
    sending their servicer's bytes as they are. Returns the handlers registered."""
    recorder = _Recorder()
    jackpot_pb2_grpc.add_JackpotServiceServicer_to_server(servicer, recorder)
    handlers = {
        name: handler._replace(response_serializer=as_is) if name in serialised else handler
        for name, handler in recorder.handlers.items()
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(recorder.service, handlers),)
    )
    return handlers
