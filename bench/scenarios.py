"""What each scenario does: the load it sends, what else it measures, and the CPU it costs.

Every scenario runs one load (bench.loadgen, in a process of its own) against servers the
orchestrator has started, and takes the CPU use of the server, its PostgreSQL backends, the
load generator and every other process on the machine over the load's wall time.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench.console import log
from bench.loadgen import LoadResult, LoadSpec, run_in_subprocess
from jackpot_grpc.service.batcher import BATCH_THREAD_NAME
from testkit.processes import ServiceProcess

# The order scenarios run in, and are reported in.
ORDER = (
    "health",
    "contribute_nobatch",
    "contribute_batching",
    "contribute_edge",
    "get_pools",
    "contribute_batch",
    "rest_contribute",
    "rss_run",
    "contribute_workers",
)
# Scenarios whose items are contributions in the batching-on database.
CONTRIBUTING = (
    "contribute_batching",
    "contribute_edge",
    "contribute_batch",
    "rest_contribute",
    "rss_run",
)


# --- measuring ---------------------------------------------------------------------------


def _postgres_cpu(database: str) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends serving `database`, by pid.

    Backends show their database in their process title ("postgres: user db host state");
    backends of other databases (other people's tests on a shared machine) are not ours.
    """
    seconds: dict[int, float] = {}
    for proc in psutil.process_iter(["name", "cmdline"]):
        title = " ".join(proc.info.get("cmdline") or ())
        if proc.info.get("name") == "postgres" and f" {database} " in title:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                seconds[proc.pid] = times.user + times.system
    return seconds


@dataclass
class Scenario:
    key: str
    title: str
    result: LoadResult
    # CPU use over the load's wall time, in % of one core (the machine has cpu_count * 100).
    server_cpu_pct: float
    postgres_cpu_pct: float
    machine_cpu_pct: float  # every process on the machine
    gateway_cpu_pct: float | None = None  # the REST scenario only
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_us_per_item(self) -> float | None:
        """Server (and gateway) CPU per item: a cost that other processes barely move.

        Throughput on a shared 2-core machine follows whatever else runs; the CPU the
        service spends per call does not, so ratios of it are the noise-robust check.
        """
        rate = self.result.items_per_s
        if not rate:
            return None
        return 1e6 * (self.server_cpu_pct + (self.gateway_cpu_pct or 0.0)) / 100 / rate

    @property
    def other_cpu_pct(self) -> float:
        """Processes that are not part of this benchmark: the noise on a shared machine."""
        ours = self.server_cpu_pct + self.postgres_cpu_pct + self.result.client_cpu_pct
        return max(0.0, self.machine_cpu_pct - ours - (self.gateway_cpu_pct or 0.0))

    def summary(self) -> dict[str, Any]:
        return {
            "title": self.title,
            **self.result.summary(),
            "server_cpu_pct": round(self.server_cpu_pct, 1),
            "postgres_cpu_pct": round(self.postgres_cpu_pct, 1),
            "machine_cpu_pct": round(self.machine_cpu_pct, 1),
            "gateway_cpu_pct": None
            if self.gateway_cpu_pct is None
            else round(self.gateway_cpu_pct, 1),
            "other_cpu_pct": round(self.other_cpu_pct, 1),
            "cpu_us_per_item": None
            if self.cpu_us_per_item is None
            else round(self.cpu_us_per_item, 1),
            **self.extra,
        }


# The server's threads by what they do: the event loop is each process's main thread, the
# batch thread names itself for the OS (jackpot_grpc.runtime.thread_names), and the rest are
# grpc's (its poller and event engine) and the small helpers.
THREAD_KINDS = ("event loop", "batch thread", "grpc and other threads")


def _thread_kind(proc: psutil.Process, thread_id: int) -> str:
    if thread_id == proc.pid:
        return THREAD_KINDS[0]
    try:
        comm = Path(f"/proc/{proc.pid}/task/{thread_id}/comm").read_text().strip()
    except OSError:
        comm = ""
    return THREAD_KINDS[1] if comm == BATCH_THREAD_NAME else THREAD_KINDS[2]


def _thread_cpu_seconds(procs: list[psutil.Process]) -> dict[str, float]:
    """The processes' CPU seconds by THREAD_KINDS, of the threads alive now (the event loop
    and the batch thread live as long as the server)."""
    seconds = dict.fromkeys(THREAD_KINDS, 0.0)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            for thread in proc.threads():
                seconds[_thread_kind(proc, thread.id)] += thread.user_time + thread.system_time
    return seconds


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


@dataclass
class _CpuMark:
    at: float
    server: float
    gateway: float
    postgres: dict[int, float]
    machine: float
    threads: dict[str, float]  # the server's CPU seconds by THREAD_KINDS

    @classmethod
    def take(
        cls, server: list[psutil.Process], gateway: list[psutil.Process], database: str
    ) -> _CpuMark:
        times = psutil.cpu_times()
        busy = times.user + times.nice + times.system + times.irq + times.softirq
        return cls(
            time.monotonic(),
            _cpu_seconds(server),
            _cpu_seconds(gateway),
            _postgres_cpu(database),
            busy,
            _thread_cpu_seconds(server),
        )


def measure(
    key: str,
    title: str,
    spec: LoadSpec,
    server: ServiceProcess,
    gateway: ServiceProcess | None = None,
    on_tick: Callable[[], None] | None = None,
) -> Scenario:
    """Run one load in its own process; also take the CPU use of server, PostgreSQL, others."""
    log(f"{title}: {spec.concurrency} in flight, {spec.duration:g}s (+{spec.warmup:g}s warm-up)")
    servers = server.processes()
    gateways = gateway.processes() if gateway else []
    database = str(conninfo_to_dict(server.env["DATABASE_URL"]).get("dbname") or "?")
    marks: list[_CpuMark] = []
    result = run_in_subprocess(
        spec,
        on_start=lambda: marks.append(_CpuMark.take(servers, gateways, database)),
        on_tick=on_tick,
    )
    if not marks:  # the child never said it was ready; measure nothing rather than guess
        marks.append(_CpuMark.take(servers, gateways, database))
    before, after = marks[0], _CpuMark.take(servers, gateways, database)
    wall = max(after.at - before.at, 1e-9)
    pg_used = sum(v - before.postgres.get(pid, 0.0) for pid, v in after.postgres.items())
    scenario = Scenario(
        key,
        title,
        result,
        server_cpu_pct=100 * (after.server - before.server) / wall,
        postgres_cpu_pct=100 * pg_used / wall,
        machine_cpu_pct=100 * (after.machine - before.machine) / wall,
        gateway_cpu_pct=100 * (after.gateway - before.gateway) / wall if gateway else None,
    )
    if result.items_per_s:
        # Where cpu_us_per_item goes, by thread (reckoned the same way: CPU over the wall
        # time, per item of the measured rate).
        # "Other" is the process's CPU less the two named threads: a grpc thread that ended
        # between the marks took its CPU out of the per-thread sums, not out of the process's.
        per_item = 1e6 / wall / result.items_per_s
        loop, batch, other = THREAD_KINDS
        split = {k: after.threads[k] - before.threads[k] for k in (loop, batch)}
        split[other] = after.server - before.server - split[loop] - split[batch]
        scenario.extra["server_cpu_us_per_item_by_thread"] = {
            kind: round(per_item * split[kind], 1) for kind in THREAD_KINDS
        }
    lat = result.summary()["latency_ms"]
    log(
        f"  {result.calls_per_s:,.0f} calls/s, {result.items_per_s:,.0f} items/s, "
        f"p50 {lat['p50']} ms, p99 {lat['p99']} ms, errors {result.errors or 0}; CPU: "
        f"server {scenario.server_cpu_pct:.0f}%, PostgreSQL {scenario.postgres_cpu_pct:.0f}%, "
        f"client {result.client_cpu_pct:.0f}%, "
        + (f"gateway {scenario.gateway_cpu_pct:.0f}%, " if gateway else "")
        + f"other processes {scenario.other_cpu_pct:.0f}%"
    )
    return scenario


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def profiling(
    path: Path | None, pid: int, seconds: float, children: bool = False
) -> Iterator[None]:
    """py-spy record on the server for `seconds`, if asked for and installed."""
    if path is None:
        yield
        return
    binary = py_spy()
    if binary is None:
        log("--profile: py-spy is not installed (pip install py-spy); not profiling")
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    args = [binary, "record", "-d", str(int(seconds)), "-o", str(path), "--pid", str(pid)]
    if path.suffix == ".txt":
        args += ["--format", "raw"]
    if children:
        args.append("--subprocesses")
    recorder = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        try:
            _, err = recorder.communicate(timeout=seconds + 30)
            log(f"py-spy profile written to {path}" if recorder.returncode == 0 else err.decode())
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait()


# --- the scenarios -------------------------------------------------------------------------


def contribute_nobatch(base: LoadSpec, server: ServiceProcess, url: str) -> Scenario:
    """(b) Contribute with batching off; with the transactions its ledger rows took."""
    first = last_contribution_id(url)
    scenario = measure(
        "contribute_nobatch",
        "Contribute, batching off",
        replace(base, target=server.target),
        server,
    )
    scenario.extra.update(transactions_since(url, first))
    return scenario


def health(base: LoadSpec, server: ServiceProcess) -> Scenario:
    """(a) grpc.health.v1 Check: the gRPC ceiling of this server."""
    spec = replace(base, kind="health", target=server.target)
    return measure("health", "health Check (gRPC ceiling)", spec, server)


def contribute_batching(
    base: LoadSpec, server: ServiceProcess, url: str, profile: Path | None, workers: int
) -> Scenario:
    """(c) Contribute with batching on, profiled with py-spy when asked for."""
    first = last_contribution_id(url)
    with profiling(profile, server.pid, base.warmup + base.duration, workers > 1):
        scenario = measure(
            "contribute_batching",
            "Contribute, batching on",
            replace(base, target=server.target),
            server,
        )
    scenario.extra.update(transactions_since(url, first))
    return scenario


def contribute_workers(base: LoadSpec, server: ServiceProcess, url: str, workers: int) -> Scenario:
    """(h) Contribute with batching on against `serve --workers N`; each process's CPU."""
    first = last_contribution_id(url)
    processes = server.processes()
    started = time.monotonic()
    before = [_cpu_seconds([p]) for p in processes]
    scenario = measure(
        "contribute_workers",
        f"Contribute, batching on, {workers} server processes",
        replace(base, target=server.target),
        server,
    )
    wall = time.monotonic() - started
    after = [_cpu_seconds([p]) for p in processes]
    # The supervisor first, then each worker: how the server's CPU is split between them.
    scenario.extra["server_cpu_pct_by_process"] = [
        round(100 * (b - a) / wall, 1) for a, b in zip(before, after, strict=True)
    ]
    scenario.extra.update(transactions_since(url, first))
    return scenario


def get_pools(base: LoadSpec, server: ServiceProcess) -> Scenario:
    """(d) GetPools."""
    spec = replace(base, kind="get_pools", target=server.target)
    return measure("get_pools", "GetPools", spec, server)


def contribute_edge(base: LoadSpec, server: ServiceProcess, edge_target: str) -> Scenario:
    """(i) Contribute with batching on, through the edge (HAProxy, limits that never bind)."""
    spec = replace(base, target=edge_target)
    return measure("contribute_edge", "Contribute through the edge (HAProxy)", spec, server)


def contribute_batch(base: LoadSpec, server: ServiceProcess, concurrency: int) -> Scenario:
    """(e) ContributeBatch, `base.batch_items` contributions per call."""
    spec = replace(base, kind="contribute_batch", target=server.target, concurrency=concurrency)
    return measure("contribute_batch", f"ContributeBatch x{base.batch_items}", spec, server)


def rest_contribute(
    base: LoadSpec, server: ServiceProcess, gateway: ServiceProcess, base_url: str
) -> Scenario:
    """(g) REST contribute through `jackpot gateway`."""
    spec = replace(base, kind="rest_contribute", target=base_url)
    return measure("rest_contribute", "REST contribute (gateway)", spec, server, gateway)


def rss_run(
    base: LoadSpec, server: ServiceProcess, contributions: int, concurrency: int
) -> tuple[Scenario, dict[str, Any]]:
    """(f) server RSS before and after `contributions` contributions via ContributeBatch."""
    per_call = base.batch_items
    calls = max(1, -(-contributions // per_call))
    time.sleep(0.5)
    before = server.rss()
    peak = [before]

    def sample() -> None:
        peak[0] = max(peak[0], server.rss())

    scenario = measure(
        "rss_run",
        f"RSS run: {calls * per_call:,} via ContributeBatch",
        replace(
            base,
            kind="contribute_batch",
            target=server.target,
            concurrency=concurrency,
            warmup=0.0,
            duration=3600.0,  # a cap: the run ends after max_calls
            max_calls=calls,
        ),
        server,
        on_tick=sample,
    )
    time.sleep(0.5)
    after = server.rss()
    peak[0] = max(peak[0], after)
    return scenario, {
        "contributions": scenario.result.total_ok_items,
        "before_bytes": before,
        "after_bytes": after,
        "peak_bytes": peak[0],
        "change_pct": round(100.0 * (after - before) / before, 2),
        "measured_after": "health, Contribute, GetPools and ContributeBatch scenarios",
    }


# --- what the ledger says ------------------------------------------------------------------


def last_contribution_id(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM contributions").fetchone()
    return int(row[0]) if row else 0


def transactions_since(url: str, after_id: int) -> dict[str, Any]:
    """Ledger rows after `after_id` and the transactions that wrote them.

    Rows of one transaction share created_at (now() is the transaction's start), so the
    distinct created_at values count the group commits: the batcher's real batch sizes.
    """
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT created_at) FROM contributions WHERE id > %s",
            (after_id,),
        ).fetchone()
    rows, transactions = (int(row[0]), int(row[1])) if row else (0, 0)
    return {
        "ledger_rows": rows,
        "transactions": transactions,
        "mean_rows_per_transaction": round(rows / transactions, 1) if transactions else None,
    }
