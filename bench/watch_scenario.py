"""The WatchPools scenario of `make bench`: many watchers on one server process.

    .venv/bin/python -m bench.watch_scenario [--watchers 10000] [--sse 1000] [--probes 40]

A fresh database, `jackpot serve` and `jackpot gateway` as subprocesses, and watcher
processes (spawned, so the watchers' client work is not in the measuring process):

1. Contribute throughput with no watcher attached (the closed-loop load of bench.loadgen);
2. the watchers attach (gRPC streams over channels of up to 500 streams each, and SSE
   streams through the gateway, one HTTP connection each); the server's RSS before and
   after gives the memory per watcher;
3. probes: one Contribute at a time, spaced; each watcher process notes when each of its
   watchers first saw the pools move to the probe's amount, so the time from a
   Contribute's answer to the update reaching the *last* watcher is known (every process
   reads the same CLOCK_MONOTONIC); the server's CPU time per message sent is read
   meanwhile;
4. the same Contribute load with the watchers attached: the throughput ratio.

Every watcher also checks its sequence numbers (no gap) and sums `skipped_updates`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import psutil
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from bench.console import log
from bench.loadgen import LoadSpec, percentile, run_in_subprocess
from jackpot_grpc.adapters import clients_file, migrations
from testkit.database import scratch_database
from testkit.ports import free_port
from testkit.processes import ServiceProcess, base_url, http_ok, local_service_env
from testkit.scratch import admin_server

STREAMS_PER_CHANNEL = 500
RAMP_STEP, RAMP_PAUSE = 200, 0.5  # watchers opened at a time, and the pause between
READY = "ready"
STOP = "stop"
ROOT = Path(__file__).resolve().parent.parent


# --- the watcher processes -------------------------------------------------------------


class Tally:
    """One process's watchers: per pool amount, the latest first-arrival and how many
    watchers saw it; messages, gaps and skips."""

    def __init__(self) -> None:
        self.last_arrival: dict[int, float] = {}
        self.seen_by: dict[int, int] = {}
        self.messages = 0
        self.gaps = 0
        self.skipped = 0
        self.errors: dict[str, int] = {}

    def pools(self, amount: int, sequence: int, previous: int, skipped: int) -> None:
        now = time.monotonic()
        self.messages += 1
        self.skipped += skipped
        if sequence != previous + 1:
            self.gaps += 1
        if now > self.last_arrival.get(amount, 0.0):
            self.last_arrival[amount] = now
        self.seen_by[amount] = self.seen_by.get(amount, 0) + 1

    def failed(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def grpc_watcher(
    stub: jackpot_pb2_grpc.JackpotServiceStub,
    metadata: tuple[tuple[str, str], ...],
    tally: Tally,
    ready: asyncio.Event,
    counter: list[int],
    total: int,
) -> None:
    previous = 0
    try:
        async for message in stub.WatchPools(pb.WatchPoolsRequest(), metadata=metadata):
            if previous == 0:
                counter[0] += 1
                if counter[0] == total:
                    ready.set()
            if message.pools:
                tally.pools(
                    message.pools[0].current_amount,
                    message.sequence,
                    previous,
                    message.skipped_updates,
                )
            previous = message.sequence
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.CANCELLED or previous == 0:
            tally.failed(error.code().name)  # CANCELLED at the start: core dropped it
    finally:
        if previous == 0:  # it never started: the others need not wait for it
            counter[0] += 1
            if counter[0] == total:
                ready.set()


async def sse_watcher(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    tally: Tally,
    ready: asyncio.Event,
    counter: list[int],
    total: int,
) -> None:
    previous = 0
    try:
        async with http.get(url, headers=headers) as response:
            if response.status != 200:
                tally.failed(f"http_{response.status}: {(await response.text())[:200]}")
                return
            sequence = 0
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("id: "):
                    sequence = int(line[4:])
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if previous == 0:
                        counter[0] += 1
                        if counter[0] == total:
                            ready.set()
                    if data.get("pools"):
                        tally.pools(
                            int(data["pools"][0]["currentAmount"]),
                            sequence,
                            previous,
                            int(data.get("skippedUpdates", "0")),
                        )
                    previous = sequence
    except aiohttp.ClientError as error:
        tally.failed(type(error).__name__)
    finally:
        if previous == 0:  # it never started: the others need not wait for it
            counter[0] += 1
            if counter[0] == total:
                ready.set()


async def watch_all(
    target: str,
    rest: str,
    token: str,
    grpc_count: int,
    sse_count: int,
    conn: multiprocessing.connection.Connection,
) -> dict[str, Any]:
    tally = Tally()
    ready = asyncio.Event()
    counter = [0]
    total = grpc_count + sse_count
    metadata = (("authorization", f"Bearer {token}"),)
    channels = [
        grpc.aio.insecure_channel(target, options=(("grpc.use_local_subchannel_pool", 1),))
        for _ in range(max(1, -(-grpc_count // STREAMS_PER_CHANNEL)))
    ]
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    tasks = []
    # Clients arrive over a moment, not in one instant: an instant's thousands of new
    # calls are more than gRPC core queues for the server (it drops the excess).
    for n in range(grpc_count):
        stub = jackpot_pb2_grpc.JackpotServiceStub(channels[n % len(channels)])
        tasks.append(
            asyncio.create_task(grpc_watcher(stub, metadata, tally, ready, counter, total))
        )
        if n % RAMP_STEP == RAMP_STEP - 1:
            await asyncio.sleep(RAMP_PAUSE)
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {token}"}
    url = f"{rest}/api/jackpot/pools:watch"
    for n in range(sse_count):
        tasks.append(
            asyncio.create_task(sse_watcher(http, url, headers, tally, ready, counter, total))
        )
        if n % RAMP_STEP == RAMP_STEP - 1:
            await asyncio.sleep(RAMP_PAUSE)
    if total:
        await asyncio.wait_for(ready.wait(), 300)
    conn.send(READY)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, conn.recv)  # STOP
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await http.close()
    for channel in channels:
        await channel.close()
    return {
        "watchers": total,
        "last_arrival": tally.last_arrival,
        "seen_by": tally.seen_by,
        "messages": tally.messages,
        "gaps": tally.gaps,
        "skipped": tally.skipped,
        "errors": tally.errors,
        "cpu_s": sum(psutil.Process().cpu_times()[:2]),
    }


def _child(
    target: str,
    rest: str,
    token: str,
    grpc_count: int,
    sse_count: int,
    conn: multiprocessing.connection.Connection,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result: Any = asyncio.run(watch_all(target, rest, token, grpc_count, sse_count, conn))
    except BaseException:
        result = traceback.format_exc()
    with contextlib.suppress(OSError):
        conn.send(result)


@contextlib.contextmanager
def watchers(
    target: str, rest: str, token: str, grpc_count: int, sse_count: int, processes: int
) -> Iterator[list[multiprocessing.connection.Connection]]:
    """Watcher processes, every watcher past its first message; stopped on exit."""
    context = multiprocessing.get_context("spawn")
    started = []
    for n in range(processes):
        mine_grpc = grpc_count // processes + (n < grpc_count % processes)
        mine_sse = sse_count // processes + (n < sse_count % processes)
        parent, child = context.Pipe()
        process = context.Process(
            target=_child, args=(target, rest, token, mine_grpc, mine_sse, child)
        )
        process.start()
        child.close()
        started.append((process, parent))
    try:
        for _, parent in started:
            if not parent.poll(300):
                raise TimeoutError("watchers not attached within 300 s")
            message = parent.recv()
            if message != READY:
                raise RuntimeError(f"watcher process failed:\n{message}")
        yield [parent for _, parent in started]
    finally:
        for process, _ in started:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)


def stop_and_collect(pipes: list[multiprocessing.connection.Connection]) -> list[dict[str, Any]]:
    for pipe in pipes:
        pipe.send(STOP)
    results = []
    for pipe in pipes:
        if not pipe.poll(60):
            raise TimeoutError("a watcher process did not report")
        result = pipe.recv()
        if isinstance(result, str):
            raise RuntimeError(f"watcher process failed:\n{result}")
        results.append(result)
    return results


# --- the measuring process -------------------------------------------------------------


def scrape(health_port: int) -> dict[str, float]:
    """The jackpot_watch* figures of /metrics/prometheus."""
    url = f"http://127.0.0.1:{health_port}/metrics/prometheus"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    figures = {}
    for line in text.splitlines():
        if line.startswith("jackpot_watch"):
            name, _, value = line.partition(" ")
            figures[name] = float(value)
    return figures


def probe(target: str, token: str, count: int, spacing: float) -> list[tuple[int, float]]:
    """(minor pool amount after, monotonic time of the answer) per Contribute."""
    answers = []
    metadata = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(target) as channel:
        stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
        for _ in range(count):
            reply = stub.Contribute(
                pb.ContributeRequest(game_id="bench-watch", wager_amount=100_000),
                metadata=metadata,
            )
            answers.append((reply.pool_amounts[0].amount, time.monotonic()))
            time.sleep(spacing)
    return answers


def gateway_for(srv: ServiceProcess, workdir: Path, token: str) -> ServiceProcess:
    """`jackpot gateway` in front of `srv`, answering the bench client."""
    env = {
        **srv.env,
        "REST_HOST": "127.0.0.1",
        "REST_PORT": str(free_port()),
        "HEALTH_PORT": str(free_port()),
        "JACKPOT_GRPC_TARGET": srv.target,
    }
    gateway = ServiceProcess(["gateway"], env, workdir / "logs-watch", name="watch-gateway")
    gateway.launch()
    pools = f"{base_url(gateway)}/api/jackpot/pools"
    try:
        gateway.wait_until(lambda: http_ok(pools, token=token), 30, "answering", interval=0.2)
    except BaseException:
        gateway.stop()
        raise
    return gateway


def server_cpu(srv: ServiceProcess) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in srv.processes())


def measure(
    admin: str,
    workdir: Path,
    *,
    grpc_watchers: int,
    sse_watchers: int,
    probes: int = 40,
    duration: float = 5.0,
    concurrency: int = 64,
    processes: int = 2,
) -> dict[str, Any]:
    token = clients_file.add_client(workdir / "watch-clients.json", "bench-watch", "game")
    assert token is not None
    with scratch_database(admin, "jackpot_bench_watch") as url:
        migrations.upgrade(url)
        env = {
            **os.environ,
            **local_service_env(url, workdir / "logs-watch"),
            "JACKPOT_CLIENTS_FILE": str(workdir / "watch-clients.json"),
            "JACKPOT_WATCH_MAX": str(grpc_watchers + sse_watchers + 100),
            # Streams the gateway forwards count per HTTP caller address: all of the
            # bench's SSE watchers come from 127.0.0.1.
            "JACKPOT_WATCH_MAX_PER_CONNECTION": str(max(STREAMS_PER_CHANNEL, sse_watchers)),
            "HTTP_MAX_CONNECTIONS": str(sse_watchers + 64),
            "GRPC_MAX_CONNECTION_AGE": "3600",
        }
        srv = ServiceProcess(["serve", "--no-migrate"], env, workdir, name="watch-server")
        srv.launch()
        gateway = None
        try:
            srv.wait_serving(60)
            gateway = gateway_for(srv, workdir, token)
            return _run(
                srv,
                gateway,
                token,
                grpc_watchers,
                sse_watchers,
                probes,
                duration,
                concurrency,
                processes,
            )
        finally:
            if gateway is not None:
                gateway.stop()
            srv.stop()


def _rounded(milliseconds: float | None) -> float | None:
    """A percentile to 0.1 ms, None (no samples) kept."""
    return None if milliseconds is None else round(milliseconds, 1)


def _run(
    srv: ServiceProcess,
    gateway: ServiceProcess,
    token: str,
    grpc_watchers: int,
    sse_watchers: int,
    probes: int,
    duration: float,
    concurrency: int,
    processes: int,
) -> dict[str, Any]:
    spec = LoadSpec(
        "contribute", srv.target, concurrency, duration=duration, warmup=1.0, token=token
    )
    log("watch scenario: Contribute throughput, no watchers")
    alone = run_in_subprocess(spec)
    rss_before = srv.rss()
    total = grpc_watchers + sse_watchers
    log(f"watch scenario: attaching {grpc_watchers:,} gRPC + {sse_watchers:,} SSE watchers")
    attach_started = time.monotonic()
    with watchers(
        srv.target, base_url(gateway), token, grpc_watchers, sse_watchers, processes
    ) as pipes:
        attach_s = time.monotonic() - attach_started
        time.sleep(2.0)  # let the attach settle (the server's RSS, the first messages)
        rss_after = srv.rss()
        figures_before, cpu_before = scrape(srv.health_port), server_cpu(srv)
        log(f"watch scenario: {probes} probes, one Contribute every 0.3 s")
        answers = probe(srv.target, token, probes, 0.3)
        time.sleep(1.0)
        figures_after, cpu_after = scrape(srv.health_port), server_cpu(srv)
        log("watch scenario: Contribute throughput with the watchers attached")
        watched = run_in_subprocess(spec)
        time.sleep(1.0)
        figures_end = scrape(srv.health_port)
        results = stop_and_collect(pipes)
    delays, missing = [], 0
    for amount, answered in answers:
        seen = sum(r["seen_by"].get(amount, 0) for r in results)
        if seen < total:
            missing += total - seen
        arrivals = [r["last_arrival"][amount] for r in results if amount in r["last_arrival"]]
        if arrivals:
            delays.append((max(arrivals) - answered) * 1000)
    sent_key = "jackpot_watch_updates_sent_total"
    sent = figures_after.get(sent_key, 0) - figures_before.get(sent_key, 0)
    return {
        "grpc_watchers": grpc_watchers,
        "sse_watchers": sse_watchers,
        "attach_s": round(attach_s, 1),
        "memory_per_watcher_kib": round((rss_after - rss_before) / max(1, total) / 1024, 1),
        "last_watcher_ms": {
            "p50": _rounded(percentile(delays, 50)),
            "p99": _rounded(percentile(delays, 99)),
            "max": round(max(delays), 1) if delays else None,
            "probes": len(answers),
        },
        "probe_updates_not_seen": missing,
        "server_cpu_us_per_message": round((cpu_after - cpu_before) / max(1, sent) * 1e6, 1),
        "messages_sent_in_probes": int(sent),
        "contribute_per_s_alone": round(alone.calls_per_s),
        "contribute_per_s_watched": round(watched.calls_per_s),
        "contribute_errors_watched": watched.errors,
        "contribute_p50_ms": {
            "alone": percentile(alone.latencies_ms, 50),
            "watched": percentile(watched.latencies_ms, 50),
        },
        "throughput_ratio": round(watched.calls_per_s / alone.calls_per_s, 3)
        if alone.calls_per_s
        else None,
        "gaps": sum(r["gaps"] for r in results),
        "skipped_updates_seen": sum(r["skipped"] for r in results),
        "watcher_errors": {k: v for r in results for k, v in r["errors"].items()},
        "server_counters": {k.removeprefix("jackpot_watch_"): v for k, v in figures_end.items()},
        "client_cpu_s": round(sum(r["cpu_s"] for r in results), 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.watch_scenario")
    p.add_argument("--watchers", type=int, default=10_000, help="gRPC watchers (10,000)")
    p.add_argument("--sse", type=int, default=1_000, help="SSE watchers via the gateway (1,000)")
    p.add_argument("--probes", type=int, default=40)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--processes", type=int, default=2, help="watcher client processes")
    p.add_argument("--database", default="auto")
    p.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "watch.json")
    args = p.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="jackpot-bench-watch-") as tmp,
        admin_server(args.database, ROOT / ".data" / "bench-postgres") as (admin, _),
    ):
        result = measure(
            admin,
            Path(tmp),
            grpc_watchers=args.watchers,
            sse_watchers=args.sse,
            probes=args.probes,
            duration=args.duration,
            processes=args.processes,
        )
    text = json.dumps(result, indent=2)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
