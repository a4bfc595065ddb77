"""The service is killed (SIGKILL) under load, mid-batch, and started again.

`jackpot serve` runs as a child process on the test database. 48 callers send keyed
contributions; after a few hundred are acknowledged the process is SIGKILLed with every
caller's call in flight (and batches in their transaction or just committed). It is
started again on the same port. Every caller that got no answer retries with the same
key until it is acknowledged. Afterwards: every key is in the ledger exactly once, the
answers agree with it, and `jackpot audit` finds the books balanced.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
from jackpot.v1 import jackpot_pb2_grpc

from testkit.calls import FAST_RECONNECT, Call, contribute_once, status_codes
from testkit.figures import env_int, latency_ms, report, scaled
from testkit.ledger import check_books, check_contributions, cli_audit
from testkit.processes import serve_process

KEYS = scaled(3_000, minimum=200)
IN_FLIGHT = env_int("JACKPOT_KILL_IN_FLIGHT", 48)
KILL_AFTER = max(50, KEYS // 6)  # acknowledged contributions before the kill
# What a caller may see while the process is dead or restarting: retry, same key.
IN_DOUBT = {"UNAVAILABLE", "DEADLINE_EXCEEDED"}


async def test_sigkill_mid_batch_then_restart_applies_every_key_once(
    database_url: str, tmp_path: Path
) -> None:
    process = serve_process(database_url, tmp_path / "logs")
    process.start()
    calls: list[Call] = []
    pending: set[str] = set()
    figures: dict[str, object] = {}
    acknowledged = 0
    time_to_kill = asyncio.Event()
    try:
        async with grpc.aio.insecure_channel(process.target, options=FAST_RECONNECT) as channel:
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)

            async def worker(number: int) -> None:
                nonlocal acknowledged
                for i in range(number, KEYS, IN_FLIGHT):
                    key, wager, backoff = f"kill-{i}", 1_000 + i, 0.02
                    while True:
                        pending.add(key)
                        call = await contribute_once(stub, key, wager, deadline_s=10)
                        pending.discard(key)
                        calls.append(call)
                        if call.ok:
                            acknowledged += 1
                            if acknowledged >= KILL_AFTER:
                                time_to_kill.set()
                            break
                        if call.code not in IN_DOUBT:
                            return  # reported by the status check below
                        await asyncio.sleep(backoff)
                        backoff = min(0.25, backoff * 2)

            async def killer() -> None:
                await time_to_kill.wait()
                figures["in_flight_at_kill"] = len(pending)
                figures["acknowledged_before_kill"] = acknowledged
                process.signal(signal.SIGKILL)
                killed_at = time.monotonic()
                figures["kill_exit_code"] = await asyncio.to_thread(process.wait, 10)
                figures["restart_s"] = round(await asyncio.to_thread(process.start), 2)
                figures["down_s"] = round(time.monotonic() - killed_at, 2)
                figures["acknowledged_when_back"] = acknowledged

            started = time.monotonic()
            await asyncio.wait_for(
                asyncio.gather(killer(), *(worker(n) for n in range(IN_FLIGHT))), timeout=120
            )
            figures["elapsed_s"] = round(time.monotonic() - started, 2)
    finally:
        figures["final_exit_code"] = process.stop()

    codes = status_codes(c.code for c in calls)
    assert set(codes) <= {"OK", *IN_DOUBT}, (codes, process.log())
    assert figures["kill_exit_code"] == -signal.SIGKILL
    assert figures["final_exit_code"] == 0, process.log()
    checked = check_contributions(database_url, calls, faults=True)
    assert checked.problems == [], checked.problems[:20]
    assert checked.acknowledged_keys == checked.ledger_rows == KEYS
    assert check_books(database_url) == []
    exit_code, audit = cli_audit(database_url)
    assert exit_code == 0 and audit["balanced"], audit

    report(
        "process_kill",
        {
            **figures,
            "keys": KEYS,
            "in_flight": IN_FLIGHT,
            "contribute_calls": len(calls),
            "contribute_codes": codes,
            "failed_call_latency_ms": latency_ms([c.latency for c in calls if not c.ok]),
            **checked.figures(),
            "cli_audit": {p["group"]: p["discrepancy"] for p in audit["pools"]},
        },
    )
