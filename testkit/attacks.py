"""Abusive traffic from loopback, each kind for a bounded time in a process of its own
(so the attacker's CPU is not the canary's): `python -m testkit.attacks KIND ARGS...`
prints one JSON object of what the attacker saw and exits.

    audit-flood URL CLIENTS SECONDS     CLIENTS loops of GET URL (…/health/jackpot?audit=now)
    gzip-bomb URL SECONDS               POST a gzip body that would inflate to 1 GiB, again
                                        and again; reports each answer's status and time
    flood TARGET CHANNELS CONCURRENCY SECONDS
                                        CHANNELS gRPC channels × CONCURRENCY closed loops of
                                        Contribute (no backoff); reports the status codes;
                                        with ATTACK_TOKEN in the environment, as that
                                        client (a bearer token, kept out of the command line)
    idle HOST PORT CONNECTIONS SECONDS  CONNECTIONS sockets that send half a request and
                                        stall; reports how many the server closed, and when
    kill-probe DATABASE_URL SECONDS     terminates the health probe's database connection
                                        every 300 ms (a probe failure the database did not
                                        cause)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
import zlib
from collections import Counter
from typing import Any

import aiohttp
import grpc
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from testkit.figures import latency_ms
from testkit.paths import PROJECT_ROOT


async def audit_flood(url: str, clients: int, seconds: float) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    how: Counter[str] = Counter()
    end = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=15)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:

        async def client() -> None:
            while time.monotonic() < end:
                try:
                    async with http.get(url) as response:
                        body = await response.json()
                        outcomes[str(response.status)] += 1
                        how[str(body.get("ledger", {}).get("audit_now"))] += 1
                except Exception as exc:
                    outcomes[type(exc).__name__] += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return {"outcomes": dict(outcomes), "audit_now": dict(how)}


def gzip_bomb(inflated: int = 1 << 30) -> bytes:
    """A gzip stream of `inflated` zero bytes (about 1/1000 of that compressed)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    parts = [packer.compress(block) for _ in range(inflated >> 20)]
    return b"".join([*parts, packer.flush()])


async def gzip_bomb_flood(url: str, seconds: float) -> dict[str, Any]:
    bomb = gzip_bomb()
    outcomes: Counter[str] = Counter()
    answered: list[float] = []
    end = time.monotonic() + seconds
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        while time.monotonic() < end:
            started = time.monotonic()
            try:
                async with http.post(url, data=bomb, headers=headers) as response:
                    await response.read()
                    outcomes[f"{response.status} {response.headers.get('Connection', '')}"] += 1
            except aiohttp.ClientError as exc:
                # The server answered and closed without reading the body: the upload stops.
                outcomes[type(exc).__name__] += 1
            answered.append(time.monotonic() - started)
            await asyncio.sleep(0.05)
    return {"bomb_bytes": len(bomb), "outcomes": dict(outcomes), "answer_ms": latency_ms(answered)}


async def flood(target: str, channels: int, concurrency: int, seconds: float) -> dict[str, Any]:
    codes: Counter[str] = Counter()
    retry_info = 0
    end = time.monotonic() + seconds
    details: dict[str, str] = {}
    # A local subchannel pool each: one TCP connection per channel, as separate clients have.
    options = [("grpc.use_local_subchannel_pool", 1)]
    opened = [grpc.aio.insecure_channel(target, options=options) for _ in range(channels)]
    token = os.environ.get("ATTACK_TOKEN")
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    try:

        async def caller(stub: jackpot_pb2_grpc.JackpotServiceStub) -> None:
            nonlocal retry_info
            while time.monotonic() < end:
                request = pb.ContributeRequest(
                    game_id="flood", wager_amount=100, idempotency_key=f"flood-{uuid.uuid4()}"
                )
                try:
                    await stub.Contribute(request, timeout=5, metadata=metadata)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    codes[exc.code().name] += 1
                    details.setdefault(exc.code().name, (exc.details() or "")[:160])
                    trailers = exc.trailing_metadata() or ()
                    if any(k == "grpc-status-details-bin" for k, _ in trailers):
                        retry_info += 1

        stubs = [jackpot_pb2_grpc.JackpotServiceStub(c) for c in opened]
        await asyncio.gather(*(caller(s) for s in stubs for _ in range(concurrency)))
    finally:
        await asyncio.gather(*(c.close() for c in opened))
    return {"codes": dict(codes), "with_status_details": retry_info, "details": details}


async def idle(host: str, port: int, connections: int, seconds: float) -> dict[str, Any]:
    closed_after: list[float] = []
    refused = 0
    answered_503 = 0

    async def one(n: int) -> None:
        nonlocal refused, answered_503
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            refused += 1
            return
        started = time.monotonic()
        if n % 2:  # half of them send part of a request line and headers, then stall
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        try:
            async with asyncio.timeout(seconds):
                data = await reader.read(1024)
                answered_503 += data.startswith(b"HTTP/1.1 503")
                while data:
                    data = await reader.read(1024)
            closed_after.append(time.monotonic() - started)
        except ConnectionResetError:  # closed with our half request unread: a reset
            closed_after.append(time.monotonic() - started)
        except (TimeoutError, OSError):
            pass
        writer.close()

    await asyncio.gather(*(one(n) for n in range(connections)))
    return {
        "connections": connections,
        "refused": refused,
        "answered_503": answered_503,
        "closed_by_server": len(closed_after),
        "closed_after_ms": latency_ms(closed_after),
    }


async def kill_probe(database_url: str, seconds: float) -> dict[str, Any]:
    import psycopg  # only this attack needs it

    killed = 0
    end = time.monotonic() + seconds
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < end:
            cursor = await conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'jackpot-health-probe'"
                " AND datname = current_database()"
            )
            row = await cursor.fetchone()
            killed += row[0] if row else 0
            await asyncio.sleep(0.3)
    return {"probe_connections_killed": killed}


async def run_attack(*args: object, budget: float, token: str | None = None) -> dict[str, Any]:
    """Run `python -m testkit.attacks ARGS` to its end (killed past `budget`), as the client
    holding `token` if given (ATTACK_TOKEN); its JSON."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "testkit.attacks",
        *map(str, args),
        cwd=PROJECT_ROOT,
        env={**os.environ, **({"ATTACK_TOKEN": token} if token else {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(budget):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    result: dict[str, Any] = json.loads(out)
    return result


def main(argv: list[str]) -> None:
    kind, args = argv[0], argv[1:]
    if kind == "audit-flood":
        result = audit_flood(args[0], int(args[1]), float(args[2]))
    elif kind == "gzip-bomb":
        result = gzip_bomb_flood(args[0], float(args[1]))
    elif kind == "flood":
        result = flood(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif kind == "idle":
        result = idle(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif kind == "kill-probe":
        result = kill_probe(args[0], float(args[1]))
    else:
        raise SystemExit(f"unknown attack {kind!r}")
    print(json.dumps(asyncio.run(result)))


if __name__ == "__main__":
    main(sys.argv[1:])
