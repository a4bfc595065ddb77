"""Who is believed about whose address, over a real closed server and a real gateway.

One caller's bad tokens must block that caller only: not the other REST callers behind the
same gateway, and not the direct gRPC clients on the gateway's host. HTTP callers come
from distinct loopback addresses (127.0.0.2, 127.0.0.3: all of 127/8 is this machine); a
"remote" gateway connects to the server through this host's own non-loopback address.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import psutil
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1.jackpot_pb2_grpc import JackpotServiceStub

from jackpot_grpc.adapters import clients_file
from jackpot_grpc.config import Settings, TlsSettings
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from jackpot_grpc.transport.peer_address import TrustedProxies
from jackpot_grpc.transport.tls import channel_credentials
from testkit import gateways
from testkit.certs_ca import authority
from testkit.identity import bearer, secured

CALLER_A, CALLER_B = "127.0.0.2", "127.0.0.3"
LIMIT = 20  # the default JACKPOT_AUTH_FAILURE_LIMIT, on the server and the gateway alike
WRONG = "jpk_not-a-token-anyone-has-0000000000000000000"
POOLS = "/api/jackpot/pools"
Starter = Callable[..., AbstractAsyncContextManager[tuple[RunningServer, dict[str, str]]]]


def non_loopback_ipv4() -> str | None:
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return str(address.address)
    return None


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def gateway_to(target: str, **options: Any) -> AbstractAsyncContextManager[str]:
    """A gateway on 127.0.0.1 in front of `target`; its base URL."""
    return gateways.gateway_to(target, max_body_bytes=1 << 16, **options)


async def statuses(
    url: str, token: str, times: int, source: str, headers: dict[str, str] | None = None
) -> list[int]:
    """`times` GETs of `url` with `token`, from the local address `source`."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    sent = {"Authorization": f"Bearer {token}", **(headers or {})}
    answers: list[int] = []
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(times):
            async with http.get(url, headers=sent) as response:
                await response.read()
                answers.append(response.status)
    return answers


async def grpc_code(target: str, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            await JackpotServiceStub(channel).GetPools(pb.GetPoolsRequest(), metadata=metadata)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def unknown_tokens(running: RunningServer) -> float:
    value = running.metrics.registry.get_sample_value(
        "jackpot_auth_failures_total", {"reason": "unknown_token"}
    )
    return value or 0.0


@pytest.fixture
async def closed_on(
    settings: Settings, database_url: str, tmp_path: Path
) -> AsyncIterator[Starter]:
    """Start a closed server (one client per role, the gateway role too) on a host."""

    @asynccontextmanager
    async def start(
        host: str,
        gateway_subject: str | None = None,
        trusted_proxies: TrustedProxies | None = None,
        tls: TlsSettings | None = None,
    ) -> AsyncIterator[tuple[RunningServer, dict[str, str]]]:
        trust = {} if trusted_proxies is None else {"trusted_proxies": trusted_proxies}
        closed, tokens = secured(settings, tmp_path, **trust)
        closed = dataclasses.replace(closed, tls=tls or closed.tls)
        if gateway_subject is not None:  # a gateway known by its certificate
            assert closed.auth.clients_file is not None
            clients_file.add_client(
                closed.auth.clients_file,
                "rest-gateway",
                "gateway",
                cert_subjects=(gateway_subject,),
                token=False,
            )
        running = await start_server(
            dataclasses.replace(closed, grpc=dataclasses.replace(closed.grpc, host=host)),
            database_url,
            port=0,
        )
        try:
            yield running, tokens
        finally:
            await running.stop(grace=1.0)

    yield start


async def test_ipv6_loopback_peers_are_loopback(closed_on: Starter) -> None:
    """gRPC reports [::1] as `ipv6:%5B::1%5D:port`: decoded, it is a loopback proxy, so the
    gateway's callers and the direct clients on ::1 are told apart."""
    if not has_ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    async with closed_on("[::1]") as (running, tokens):
        target = f"[::1]:{running.port}"
        async with gateway_to(target) as base:
            refused = await statuses(base + POOLS, WRONG, LIMIT + 5, CALLER_A)
            assert refused[:LIMIT] == [401] * LIMIT
            assert set(refused[LIMIT:]) == {429}  # caller A is blocked...
            # ...and caller B, through the same gateway over ::1, is not.
            assert await statuses(base + POOLS, tokens["reader"], 10, CALLER_B) == [200] * 10
        # A direct client on ::1 vouching for someone else as a loopback proxy may: its
        # callers' failures are theirs, not ::1's.
        vouched = (("x-forwarded-for", "198.51.100.7"),)
        for _ in range(LIMIT):
            code = await grpc_code(target, (*bearer(WRONG), *vouched))
            assert code == grpc.StatusCode.UNAUTHENTICATED
        assert await grpc_code(target, bearer(tokens["game"])) == grpc.StatusCode.OK


TRUST = ("gateway_token", "trusted_proxies", "neither")


@pytest.mark.parametrize("trust", TRUST)
async def test_a_remote_gateways_callers_are_throttled_one_by_one(
    closed_on: Starter, trust: str
) -> None:
    """The gateway reaches the server from a non-loopback address: believed with a
    gateway-role token or from JACKPOT_TRUSTED_PROXIES, else all its callers are one."""
    host = non_loopback_ipv4()
    if host is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    server_trusts = TrustedProxies.parse(f"{host}/32" if trust == "trusted_proxies" else "none")
    async with closed_on("0.0.0.0", trusted_proxies=server_trusts) as (running, tokens):
        token = tokens["gateway"] if trust == "gateway_token" else None
        async with gateway_to(f"{host}:{running.port}", gateway_token=token) as base:
            refused = await statuses(base + POOLS, WRONG, LIMIT + 5, CALLER_A)
            assert refused == [401] * LIMIT + [429] * 5
            # The gateway answered the last five itself: the server saw twenty.
            assert unknown_tokens(running) == LIMIT
            served = await statuses(base + POOLS, tokens["reader"], 10, CALLER_B)
            if trust == "neither":
                assert served == [429] * 10  # every REST caller shares the gateway's address
            else:
                assert served == [200] * 10
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{base}/metrics/gateway") as response,
            ):
                refusals = (await response.json())["refusals"]
            assert refusals["http"]["auth_throttled"] == 5


async def test_a_gateway_certificate_vouches_for_its_callers(
    closed_on: Starter, tmp_path: Path
) -> None:
    """Under mTLS a client certificate with the gateway role vouches, though the server
    trusts no proxy address; it never stands in for a REST caller without a token."""
    ca = authority(tmp_path / "ca")
    server_key, server_cert = ca.issue(tmp_path, "localhost")
    gateway_key, gateway_cert = ca.issue(tmp_path, "gateway.example")
    tls = TlsSettings(
        cert_file=server_cert,
        key_file=server_key,
        client_ca_file=ca.cert,
        ca_file=ca.cert,
        client_cert_file=gateway_cert,
        client_key_file=gateway_key,
    )
    none = TrustedProxies.parse("none")
    async with closed_on("127.0.0.1", "gateway.example", none, tls) as (
        running,
        tokens,
    ):
        credentials = channel_credentials(running.settings.tls)
        async with gateway_to(f"localhost:{running.port}", credentials=credentials) as base:
            assert await statuses(base + POOLS, WRONG, LIMIT, CALLER_A) == [401] * LIMIT
            assert await statuses(base + POOLS, tokens["reader"], 5, CALLER_B) == [200] * 5
            no_token = await statuses(base + POOLS, "", 1, CALLER_B)
            assert no_token == [401]


async def test_a_gateway_token_without_the_gateway_role_is_refused(closed_on: Starter) -> None:
    async with closed_on("127.0.0.1") as (running, tokens):
        target = f"127.0.0.1:{running.port}"
        async with gateway_to(target, gateway_token=tokens["reader"]) as base:
            assert await statuses(base + POOLS, tokens["reader"], 1, CALLER_B) == [403]
        async with gateway_to(target, gateway_token=WRONG) as base:
            assert await statuses(base + POOLS, tokens["reader"], 1, CALLER_B) == [401]
        # The gateway role itself may call nothing.
        code = await grpc_code(target, bearer(tokens["gateway"]))
        assert code == grpc.StatusCode.PERMISSION_DENIED


async def raw_get(port: int, source: str, token: str, forwarded_for: bytes) -> int:
    """A GET with an X-Forwarded-For of arbitrary bytes (HTTP clients refuse to send some)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(
        b"GET " + POOLS.encode() + b" HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"X-Forwarded-For: " + forwarded_for + b"\r\n\r\n"
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


async def test_garbage_forwarded_for_keeps_the_blame_on_the_caller(
    closed_on: Starter, caplog: pytest.LogCaptureFixture
) -> None:
    """A non-ASCII X-Forwarded-For: the gateway still names the caller (its TCP peer), so
    neither the gateway's own address nor direct clients beside it get the failures."""
    async with closed_on("127.0.0.1") as (running, tokens):
        target = f"127.0.0.1:{running.port}"
        async with gateway_to(target) as base:
            port = int(base.rsplit(":", 1)[1])
            with caplog.at_level(logging.WARNING, logger="jackpot_grpc.entrypoints.auth"):
                for garbage in ("snowman ☃".encode(), b"\xff\xfe", "10.0.0.1, ü".encode()):
                    for _ in range(LIMIT):
                        status = await raw_get(port, CALLER_A, WRONG, garbage)
                        assert status in (401, 429)
            assert f"peer={CALLER_A} via" in caplog.text
            # The direct client on 127.0.0.1 (the gateway's own address) is not blocked...
            assert await grpc_code(target, bearer(tokens["game"])) == grpc.StatusCode.OK
            # ...nor another REST caller.
            assert await statuses(base + POOLS, tokens["reader"], 3, CALLER_B) == [200] * 3
            # Caller A is.
            assert await statuses(base + POOLS, tokens["reader"], 1, CALLER_A) == [429]
