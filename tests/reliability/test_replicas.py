"""Two replicas on one database behind one gateway; one is SIGKILLed under load.

Two `jackpot serve` processes share a fresh database; one `jackpot gateway` balances over
both (JACKPOT_GRPC_TARGET: the two addresses, round_robin, health-checked). Callers send
keyed contributions through the gateway (REST) and directly over gRPC to each server.
Once some are acknowledged, server A is SIGKILLed with calls in flight. The gateway keeps
answering through B; a REST caller whose call failed retries the same key through the
gateway, a gRPC caller of A retries the same key on B. Afterwards every acknowledged key
is in the ledger exactly once with the answer its caller got, the books balance, and
`jackpot audit` passes.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from google.protobuf import json_format
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from testkit.calls import FAST_RECONNECT, Call, contribute_once, status_codes
from testkit.figures import report, scaled
from testkit.ledger import check_books, check_contributions, cli_audit
from testkit.ports import free_port
from testkit.processes import ServiceProcess, http_ok, service_env

KEYS_PER_ROUTE = scaled(300, minimum=60)  # through the gateway, to A, to B
IN_FLIGHT = 8  # callers per route
KILL_AFTER = KEYS_PER_ROUTE // 3  # acknowledged calls (all routes) before the kill
# What a caller may see for a call in flight on the killed server: retry, same key.
IN_DOUBT_GRPC = {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
IN_DOUBT_HTTP = {502, 503, 504}
CONTRIBUTE = "/api/jackpot/contribute"


def _server(database_url: str, log_dir: Path, name: str) -> ServiceProcess:
    # Migrated already (the fixture's database); the audit runs at start on one of them.
    env = service_env(database_url, log_dir, JACKPOT_DRAIN_DELAY="0.2")
    return ServiceProcess(["serve", "--no-migrate"], env, log_dir, name=name)


def _gateway(servers: list[ServiceProcess], log_dir: Path) -> ServiceProcess:
    env = {
        **servers[0].env,
        "REST_PORT": str(free_port()),
        # A plain address list: the gateway dials both, round_robin, health-checked.
        "JACKPOT_GRPC_TARGET": ",".join(s.target for s in servers),
        "JACKPOT_METRICS_URL": f"http://127.0.0.1:{servers[0].health_port}/metrics",
    }
    return ServiceProcess(["gateway"], env, log_dir, name="gateway")


def _rest_answer(body: dict[str, Any]) -> pb.ContributeResponse:
    """The gateway's JSON as the ContributeResponse it transcoded (nulls are unset)."""
    present = {k: v for k, v in body.items() if v is not None}
    return json_format.ParseDict(present, pb.ContributeResponse(), ignore_unknown_fields=True)


async def _rest_contribute(
    http: aiohttp.ClientSession, base: str, key: str, wager: int
) -> tuple[Call, int]:
    started = time.monotonic()
    payload = {"gameId": "replicas-rest", "wagerAmount": wager, "idempotencyKey": key}
    try:
        async with http.post(base + CONTRIBUTE, json=payload) as response:
            status = response.status
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Call(key, wager, started, time.monotonic(), f"HTTP {type(exc).__name__}"), 0
    ended = time.monotonic()
    if status != 200:
        return Call(key, wager, started, ended, f"HTTP {status}", None, str(body)), status
    return Call(key, wager, started, ended, "OK", _rest_answer(body)), status


async def test_gateway_serves_through_the_survivor_when_a_replica_is_killed(
    database_url: str, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    a, b = _server(database_url, logs, "serve-a"), _server(database_url, logs, "serve-b")
    gateway = _gateway([a, b], logs)
    calls: list[Call] = []
    figures: dict[str, Any] = {}
    acknowledged = 0
    killed_at: float | None = None
    time_to_kill = asyncio.Event()
    try:
        a.start()
        b.start()
        gateway.launch()
        base = f"http://127.0.0.1:{gateway.env['REST_PORT']}"
        gateway.wait_until(lambda: http_ok(f"{base}/api/jackpot/pools"), 20, "answering", 0.1)

        def acknowledge() -> None:
            nonlocal acknowledged
            acknowledged += 1
            if acknowledged >= KILL_AFTER:
                time_to_kill.set()

        async def rest_caller(http: aiohttp.ClientSession, number: int) -> None:
            for i in range(number, KEYS_PER_ROUTE, IN_FLIGHT):
                key, wager = f"rest-{i}", 1_000 + i
                for _ in range(50):
                    call, status = await _rest_contribute(http, base, key, wager)
                    calls.append(call)
                    if call.ok:
                        acknowledge()
                        break
                    if status and status not in IN_DOUBT_HTTP:
                        return  # reported by the status check below
                    await asyncio.sleep(0.05)

        async def grpc_caller(route: str, stubs: list[Any], number: int) -> None:
            """Calls its own server; after a failure, the same key on the other one."""
            for i in range(number, KEYS_PER_ROUTE, IN_FLIGHT):
                key, wager = f"{route}-{i}", 2_000 + i
                for attempt in range(50):
                    stub = stubs[attempt % 2]
                    call = await contribute_once(stub, key, wager, game=route, deadline_s=5)
                    calls.append(call)
                    if call.ok:
                        acknowledge()
                        break
                    if call.code not in IN_DOUBT_GRPC:
                        return
                    await asyncio.sleep(0.05)

        async def killer() -> None:
            nonlocal killed_at
            await time_to_kill.wait()
            figures["acknowledged_before_kill"] = acknowledged
            a.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            figures["kill_exit_code"] = await asyncio.to_thread(a.wait, 10)

        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            grpc.aio.insecure_channel(a.target, options=FAST_RECONNECT) as to_a,
            grpc.aio.insecure_channel(b.target, options=FAST_RECONNECT) as to_b,
        ):
            stub_a = jackpot_pb2_grpc.JackpotServiceStub(to_a)
            stub_b = jackpot_pb2_grpc.JackpotServiceStub(to_b)
            started = time.monotonic()
            await asyncio.wait_for(
                asyncio.gather(
                    killer(),
                    *(rest_caller(http, n) for n in range(IN_FLIGHT)),
                    *(grpc_caller("grpc-a", [stub_a, stub_b], n) for n in range(IN_FLIGHT)),
                    *(grpc_caller("grpc-b", [stub_b, stub_a], n) for n in range(IN_FLIGHT)),
                ),
                timeout=120,
            )
            figures["elapsed_s"] = round(time.monotonic() - started, 2)
            # The gateway still answers reads, through B alone.
            async with http.get(f"{base}/api/jackpot/pools") as response:
                assert response.status == 200
    finally:
        figures["gateway_exit_code"] = gateway.stop()
        figures["b_exit_code"] = b.stop()
        a.stop()  # already dead unless the test failed before the kill

    logs_text = f"{gateway.log()}\n{b.log()}"
    codes = status_codes(c.code for c in calls)
    rest_calls = [c for c in calls if c.key is not None and c.key.startswith("rest-")]
    assert killed_at is not None and figures["kill_exit_code"] == -signal.SIGKILL
    # Only calls caught by the kill failed, and only with retryable codes.
    allowed = {"OK", *IN_DOUBT_GRPC, *(f"HTTP {s}" for s in IN_DOUBT_HTTP)}
    assert set(codes) <= allowed, (codes, logs_text)
    failed_rest = [c for c in rest_calls if not c.ok]
    assert len(failed_rest) <= IN_FLIGHT * 3, (status_codes(c.code for c in failed_rest), logs_text)
    rest_after_kill = [c for c in rest_calls if c.ok and c.started > killed_at]
    assert len(rest_after_kill) >= KEYS_PER_ROUTE // 3, "the gateway stopped serving"
    assert (figures["gateway_exit_code"], figures["b_exit_code"]) == (0, 0), logs_text

    checked = check_contributions(database_url, calls, faults=True)
    assert checked.problems == [], checked.problems[:20]
    assert checked.acknowledged_keys == checked.ledger_rows == 3 * KEYS_PER_ROUTE
    assert check_books(database_url) == []
    exit_code, audit = cli_audit(database_url)
    assert exit_code == 0 and audit["balanced"], audit

    report(
        "replicas_kill",
        {
            **figures,
            "keys": 3 * KEYS_PER_ROUTE,
            "contribute_calls": len(calls),
            "contribute_codes": codes,
            "rest_failed": len(failed_rest),
            "rest_acknowledged_after_kill": len(rest_after_kill),
            **checked.figures(),
        },
    )
