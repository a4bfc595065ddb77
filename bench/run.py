"""`make bench`: one run, fresh databases, every scenario, the ratios the targets ask for.

    .venv/bin/python -m bench.run [--duration 5] [--concurrency 64] [--quick] [--profile out.svg]

The server runs as a subprocess (`jackpot serve`) on a fresh migrated database; the load
generator runs in its own spawned process (bench.loadgen). Everything started here is
stopped in `finally` blocks, Ctrl-C included. Results go to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import psutil
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg.conninfo import conninfo_to_dict

from bench import audit_scenario
from bench.loadgen import LoadResult, LoadSpec, run_in_subprocess
from jackpot_grpc.adapters.scratch import admin_server, create_database, drop_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "latest.json"
JACKPOT = Path(sys.executable).parent / "jackpot"
# Other processes' CPU (in % of one core) above which a scenario is reported as noisy.
NOISE_PCT = 25


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- databases ---------------------------------------------------------------------------


@contextlib.contextmanager
def admin_database(choice: str) -> Iterator[tuple[str, str]]:
    """(admin URL, "system" | "embedded" | "url"): a server where we may CREATE DATABASE."""
    with admin_server(choice, ROOT / ".data" / "bench-postgres") as (url, kind):
        if choice == "auto" and kind == "embedded":
            log("system PostgreSQL does not answer; using the embedded one")
        yield url, kind


@contextlib.contextmanager
def bench_database(admin: str, label: str) -> Iterator[str]:
    """A fresh database, migrated to head, dropped on exit."""
    from jackpot_grpc.adapters import migrations

    name = f"jackpot_bench_{label}_{uuid.uuid4().hex[:8]}"
    url = create_database(admin, name)
    try:
        migrations.upgrade(url)
        yield url
    finally:
        drop_database(admin, name)


def postgres_version(admin: str) -> str:
    with psycopg.connect(admin) as conn:
        row = conn.execute("SELECT version()").fetchone()
    return str(row[0]) if row else "unknown"


def ledger_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM contributions").fetchone()
    return int(row[0]) if row else 0


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


def audit(url: str) -> dict[str, Any]:
    """`jackpot audit --json`: every pool reconciled against its ledger."""
    import asyncio

    from jackpot_grpc.config import Settings
    from jackpot_grpc.service.reports import audit_report, run_audit

    settings = dataclasses.replace(Settings.from_env({}), pool_min_size=1, pool_max_size=2)
    return audit_report(asyncio.run(run_audit(settings, url)))


# --- processes -------------------------------------------------------------------------


@dataclass
class Service:
    """A `jackpot <command>` subprocess in its own session (Ctrl-C reaches only us)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def processes(self) -> list[psutil.Process]:
        """This process and its children (`serve --workers N` forks N servers)."""
        root = psutil.Process(self.pid)
        return [root, *root.children(recursive=True)]

    def rss(self) -> int:
        total = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                total += int(proc.memory_info().rss)
        return total

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait for the drain, SIGKILL only if it hangs."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} ignored SIGTERM for {timeout:.0f}s; killing it")
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


@contextlib.contextmanager
def service(name: str, args: list[str], env: dict[str, str], workdir: Path) -> Iterator[Service]:
    log_path = workdir / f"{name}.out"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [str(JACKPOT), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    running = Service(name, process, log_path, env)
    try:
        yield running
    finally:
        code = running.stop()
        if code not in (0, None, -signal.SIGTERM):
            log(f"{name} exited with code {code}; last output:\n{running.tail()}")


def _listening(proc: psutil.Process, port: int) -> bool:
    with contextlib.suppress(psutil.Error):
        for conn in proc.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return True
    return False


def wait_for_health(target: str, proc: Service, timeout: float = 60.0, workers: int = 1) -> None:
    """Until grpc.health.v1 Check says SERVING (or the process dies).

    With `serve --workers N`, also until all N children listen on the port (a worker
    starts listening only after its health is known).
    """
    deadline = time.monotonic() + timeout
    port = int(target.rsplit(":", 1)[1])
    while workers > 1:
        children = proc.processes()[1:]
        if sum(_listening(child, port) for child in children) >= workers:
            break
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name}: {workers} workers not listening after {timeout:.0f}s")
        time.sleep(0.1)
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.name} not SERVING after {timeout:.0f}s")
            time.sleep(0.1)


def wait_for_http(url: str, proc: Service, timeout: float) -> str | None:
    """None once `url` answers 200; otherwise why it did not."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            last_line = (proc.tail(1) or "no output").strip()
            return f"exited with code {proc.process.returncode}: {last_line}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return None
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    return f"no 200 from {url} within {timeout:.0f}s ({last})"


# --- measuring -------------------------------------------------------------------------


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
        )


def measure(
    key: str,
    title: str,
    spec: LoadSpec,
    server: Service,
    gateway: Service | None = None,
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


# --- targets and report ------------------------------------------------------------------


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


@dataclass
class Target:
    name: str
    value: float | None
    goal: str  # e.g. ">= 0.8"
    met: bool | None  # None: not measured (skipped)
    unit: str = ""
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": None if self.value is None else round(self.value, 4),
            "goal": self.goal,
            "met": self.met,
            "unit": self.unit,
            "note": self.note,
        }


def at_least(name: str, value: float | None, goal: float, unit: str = "", note: str = "") -> Target:
    met = None if value is None else value >= goal
    return Target(name, value, f">= {goal:g}", met, unit, note)


def evaluate(
    s: dict[str, Scenario], rss_change: float | None, rest_note: str, p99_key: str
) -> list[Target]:
    health = s["health"].result.calls_per_s
    batching = s["contribute_batching"].result.calls_per_s

    def per_cpu(numerator: str, denominator: str) -> str:
        """The same ratio in calls per CPU-second (inverse ratio of CPU per call)."""
        a, b = s[numerator].cpu_us_per_item, s[denominator].cpu_us_per_item
        value = ratio(b, a) if a and b else None
        return f"per CPU-second of the service: {fmt(value, 2)}"

    targets = [
        at_least(
            "Contribute(batching) / health ceiling",
            ratio(batching, health),
            0.8,
            note=per_cpu("contribute_batching", "health"),
        ),
        at_least(
            "Contribute(batching) / Contribute(no batching)",
            ratio(batching, s["contribute_nobatch"].result.calls_per_s),
            2,
        ),
        at_least(
            "GetPools / health ceiling",
            ratio(s["get_pools"].result.calls_per_s, health),
            0.9,
            note=per_cpu("get_pools", "health"),
        ),
        at_least(
            "ContributeBatch durable contributions/s",
            s["contribute_batch"].result.items_per_s,
            50_000,
            "contributions/s",
        ),
    ]
    rest = s.get("rest_contribute")
    targets.append(
        at_least(
            "REST / gRPC Contribute throughput",
            ratio(rest.result.calls_per_s, batching) if rest else None,
            0.5,
            note=f"{per_cpu('rest_contribute', 'contribute_batching')} (server + gateway)"
            if rest
            else rest_note,
        )
    )
    p99 = s[p99_key].result.summary()["latency_ms"]["p99"]
    concurrency = s[p99_key].result.concurrency
    targets.append(
        Target(
            f"Contribute(batching) p99 at {concurrency} in flight",
            p99,
            "<= 25",
            None if p99 is None else p99 <= 25,
            "ms",
            "" if concurrency == 64 else "target is defined at 64 in flight",
        )
    )
    targets.append(
        Target(
            "server RSS change across the RSS run",
            rss_change,
            "within ±10%",
            None if rss_change is None else abs(rss_change) <= 10,
            "%",
        )
    )
    return targets


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(scenarios: list[Scenario]) -> str:
    header = (
        f"{'scenario':<38} {'in-flight':>9} {'calls/s':>8} {'items/s':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'errors':>6} | {'CPU us/item':>11} {'server':>6} {'pg':>4} "
        f"{'client':>6} {'gw':>4} {'other':>5}"
    )
    lines = [header, "-" * len(header)]
    for sc in scenarios:
        r = sc.result
        lat = r.summary()["latency_ms"]
        gateway = "-" if sc.gateway_cpu_pct is None else f"{sc.gateway_cpu_pct:.0f}%"
        lines.append(
            f"{sc.title:<38} {r.concurrency:>9} {fmt(r.calls_per_s, 0):>8} "
            f"{fmt(r.items_per_s, 0):>8} {fmt(lat['p50'], 2):>8} {fmt(lat['p99'], 2):>8} "
            f"{r.error_count:>6} | {fmt(sc.cpu_us_per_item, 0):>11} "
            f"{sc.server_cpu_pct:>5.0f}% {sc.postgres_cpu_pct:>3.0f}% "
            f"{r.client_cpu_pct:>5.0f}% {gateway:>4} {sc.other_cpu_pct:>4.0f}%"
        )
    lines.append(
        "CPU us/item: server (+ gateway) CPU microseconds per call or item. Then % of one core "
        "over the scenario: server, PostgreSQL backends of the bench database, load generator, "
        "REST gateway, every other process on the machine (noise)"
    )
    return "\n".join(lines)


def target_table(targets: list[Target]) -> str:
    lines = [f"{'target':<48} {'value':>14} {'goal':>12}  status"]
    for t in targets:
        status = "skipped" if t.met is None else ("met" if t.met else "MISSED")
        value = fmt(t.value, 0 if (t.value or 0) >= 1000 else 2) + (f" {t.unit}" if t.unit else "")
        lines.append(f"{t.name:<48} {value:>14} {t.goal:>12}  {status}")
        if t.note:
            lines.append(f"    note: {t.note}")
    return "\n".join(lines)


def machine_info(admin: str, database_kind: str) -> dict[str, Any]:
    import grpc as grpc_module

    freq = psutil.cpu_freq()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpu_model": _cpu_model(),
        "cpu_mhz": round(freq.current) if freq else None,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "grpcio": grpc_module.__version__,
        "postgresql": postgres_version(admin),
        "postgresql_kind": database_kind,
        "code": _code_version(),
    }


def _code_version() -> dict[str, Any]:
    """The commit measured, and how many files differed from it (work in progress)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "modified_files": len(status.splitlines()) if status else 0,
    }


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


# --- the run ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, help="measured seconds per scenario (default 5)")
    p.add_argument("--warmup", type=float, help="unmeasured seconds before each (default 1)")
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight (default 64)")
    p.add_argument(
        "--batch-concurrency",
        type=int,
        default=4,
        help="ContributeBatch calls in flight (default 4; each carries --batch-items)",
    )
    p.add_argument("--batch-items", type=int, default=1000, help="items per ContributeBatch")
    p.add_argument(
        "--rss-contributions",
        type=int,
        help="contributions sent between the two RSS readings (default 1,000,000; quick 100,000)",
    )
    p.add_argument(
        "--channels",
        type=int,
        help="gRPC channels (TCP connections) per load generator (default 1; 4 per server worker)",
    )
    p.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="`jackpot serve --workers N` (SO_REUSEPORT processes; default 1)",
    )
    p.add_argument("--idempotency-keys", action="store_true", help="a unique key on every item")
    p.add_argument("--quick", action="store_true", help="2 s scenarios, 100,000 for the RSS run")
    p.add_argument("--no-gateway", action="store_true", help="skip the REST scenario")
    p.add_argument(
        "--database",
        default="auto",
        help="auto (system PostgreSQL, else embedded), system, embedded, or an admin URL",
    )
    p.add_argument(
        "--profile",
        type=Path,
        help="py-spy record the server during Contribute(batching) into this file (.svg/.txt)",
    )
    p.add_argument(
        "--audit-rows", type=int, help="contributions in the audit scenario (default 1,000,000)"
    )
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = p.parse_args(argv)
    if args.audit_rows is None:
        args.audit_rows = 100_000 if args.quick else 1_000_000
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    if args.channels is None:
        args.channels = 1 if args.server_workers <= 1 else 4 * args.server_workers
    if args.rss_contributions is None:
        args.rss_contributions = 100_000 if args.quick else 1_000_000
    return args


def server_env(
    url: str, batching: bool, grpc_port: int, workdir: Path, label: str
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        GRPC_HOST="127.0.0.1",
        GRPC_PORT=str(grpc_port),
        HEALTH_HOST="127.0.0.1",
        HEALTH_PORT=str(free_port()),
        JACKPOT_BATCHING="on" if batching else "off",
        JACKPOT_LOG_DIR=str(workdir / f"logs-{label}"),
    )
    return env


def run(args: argparse.Namespace) -> int:
    if not JACKPOT.exists():
        raise SystemExit(f"{JACKPOT} not found: run `make bench` (it installs the virtualenv)")
    # Every load is this one with its kind, target and perhaps concurrency replaced.
    base = LoadSpec(
        "contribute",
        "",
        args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
        channels=args.channels,
        batch_items=args.batch_items,
        idempotency_keys=args.idempotency_keys,
    )
    serve = ["serve", "--no-migrate"]
    if args.server_workers > 1:
        serve += ["--workers", str(args.server_workers)]
    scenarios: dict[str, Scenario] = {}
    report: dict[str, Any] = {
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "batch_concurrency": args.batch_concurrency,
            "batch_items": args.batch_items,
            "rss_contributions": args.rss_contributions,
            "channels": args.channels,
            "server_workers": args.server_workers,
            "idempotency_keys": args.idempotency_keys,
            "quick": args.quick,
            "profiled": args.profile is not None,
            "client": "closed loop, grpc.aio, one spawned process per scenario",
        },
        "notes": [],
    }
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="jackpot-bench-") as tmp,
        admin_database(args.database) as (admin, kind),
    ):
        workdir = Path(tmp)
        report["machine"] = machine_info(admin, kind)
        log(f"PostgreSQL ({kind}): {report['machine']['postgresql']}")

        # (b) batching off, on a database of its own.
        with bench_database(admin, "off") as url_off:
            port = free_port()
            env = server_env(url_off, False, port, workdir, "off")
            with service("server-batching-off", serve, env, workdir) as srv:
                wait_for_health(f"127.0.0.1:{port}", srv, workers=args.server_workers)
                first = last_contribution_id(url_off)
                scenarios["contribute_nobatch"] = measure(
                    "contribute_nobatch",
                    "Contribute, batching off",
                    replace(base, target=f"127.0.0.1:{port}"),
                    srv,
                )
            scenarios["contribute_nobatch"].extra.update(transactions_since(url_off, first))
            acknowledged = scenarios["contribute_nobatch"].result.total_ok_items
            report["audit_batching_off"] = {
                **audit(url_off),
                "ledger_rows": ledger_rows(url_off),
                "acknowledged_contributions": acknowledged,
            }

        # Everything else: batching on (the default), one fresh database.
        with bench_database(admin, "on") as url_on:
            port = free_port()
            target = f"127.0.0.1:{port}"
            env = server_env(url_on, True, port, workdir, "on")
            with service("server", serve, env, workdir) as srv:
                wait_for_health(target, srv, workers=args.server_workers)
                scenarios["health"] = measure(
                    "health",
                    "health Check (gRPC ceiling)",
                    replace(base, kind="health", target=target),
                    srv,
                )
                first = last_contribution_id(url_on)
                with profiling(
                    args.profile, srv.pid, args.warmup + args.duration, args.server_workers > 1
                ):
                    scenarios["contribute_batching"] = measure(
                        "contribute_batching",
                        "Contribute, batching on",
                        replace(base, target=target),
                        srv,
                    )
                scenarios["contribute_batching"].extra.update(transactions_since(url_on, first))
                scenarios["get_pools"] = measure(
                    "get_pools",
                    "GetPools",
                    replace(base, kind="get_pools", target=target),
                    srv,
                )
                scenarios["contribute_batch"] = measure(
                    "contribute_batch",
                    f"ContributeBatch x{args.batch_items}",
                    replace(
                        base,
                        kind="contribute_batch",
                        target=target,
                        concurrency=args.batch_concurrency,
                    ),
                    srv,
                )
                rest_note = rest_scenario(args, base, scenarios, srv, port, env, workdir)
                rss_report = rss_scenario(args, base, scenarios, srv, target)
                report["rss"] = rss_report
            report["rest_note"] = rest_note
            acknowledged = sum(
                scenarios[k].result.total_ok_items
                for k in ("contribute_batching", "contribute_batch", "rest_contribute", "rss_run")
                if k in scenarios
            )
            report["audit"] = {
                **audit(url_on),
                "ledger_rows": ledger_rows(url_on),
                "acknowledged_contributions": acknowledged,
            }

        # The audit's cost per million ledger rows (bench/audit_scenario.py).
        with bench_database(admin, "audit") as url_audit:
            log(f"audit scenario: {args.audit_rows:,} contributions")
            report["audit_scenario"] = audit_scenario.measure(url_audit, args.audit_rows)

    ordered = [
        scenarios[k]
        for k in (
            "health",
            "contribute_nobatch",
            "contribute_batching",
            "get_pools",
            "contribute_batch",
            "rest_contribute",
            "rss_run",
        )
        if k in scenarios
    ]
    targets = evaluate(scenarios, report["rss"]["change_pct"], rest_note, "contribute_batching")
    report["scenarios"] = {s.key: s.summary() for s in ordered}
    report["targets"] = [t.as_dict() for t in targets]
    noisy = {s.key: round(s.other_cpu_pct) for s in ordered if s.other_cpu_pct > NOISE_PCT}
    if noisy:
        report["notes"].append(
            f"other processes used more than {NOISE_PCT}% of a core during {sorted(noisy)}: "
            "the machine was shared, so throughputs and ratios of this run are noisy"
        )
    report["noise_other_cpu_pct"] = {s.key: round(s.other_cpu_pct, 1) for s in ordered}
    report["elapsed_s"] = round(time.monotonic() - started, 1)

    print()
    print(table(ordered))
    print()
    print(target_table(targets))
    print()
    for note in report["notes"]:
        print(f"NOTE: {note}")
    for label, key in (("batching off", "audit_batching_off"), ("batching on", "audit")):
        a = report[key]
        verdict = "books balance" if a["balanced"] else "BOOKS DO NOT BALANCE"
        print(
            f"audit ({label} database): {verdict}"
            f"; ledger rows {a['ledger_rows']:,}, acknowledged contributions "
            f"{a['acknowledged_contributions']:,}"
        )
    print(audit_scenario.summary(report["audit_scenario"]))
    for key in ("contribute_nobatch", "contribute_batching"):
        extra = scenarios[key].extra
        print(
            f"{scenarios[key].title}: {extra['ledger_rows']:,} ledger rows in "
            f"{extra['transactions']:,} transactions "
            f"({extra['mean_rows_per_transaction']} per commit)"
        )
    rss_info = report["rss"]
    print(
        f"server RSS: {rss_info['before_bytes'] / 2**20:.1f} MiB before, "
        f"{rss_info['after_bytes'] / 2**20:.1f} MiB after {rss_info['contributions']:,} "
        f"contributions (peak {rss_info['peak_bytes'] / 2**20:.1f} MiB)"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.output} in {report['elapsed_s']:.0f}s")
    balanced = (
        report["audit"]["balanced"]
        and report["audit_batching_off"]["balanced"]
        and report["audit_scenario"]["balanced"]
    )
    return 0 if balanced else 1


def rest_scenario(
    args: argparse.Namespace,
    base: LoadSpec,
    scenarios: dict[str, Scenario],
    server: Service,
    grpc_port: int,
    server_env: dict[str, str],
    workdir: Path,
) -> str:
    """(g) REST contribute through `jackpot gateway`; a note instead when it is unavailable."""
    if args.no_gateway:
        return "skipped: --no-gateway"
    rest_port = free_port()
    env = dict(server_env)
    env.update(
        REST_HOST="127.0.0.1",
        REST_PORT=str(rest_port),
        HEALTH_PORT=str(free_port()),
        JACKPOT_GRPC_TARGET=f"localhost:{grpc_port}",
    )
    base_url = f"http://127.0.0.1:{rest_port}"
    with service("gateway", ["gateway"], env, workdir) as gateway:
        problem = wait_for_http(f"{base_url}/api/jackpot/pools", gateway, timeout=20)
        if problem is not None:
            note = f"skipped: `jackpot gateway` is not available ({problem.strip()})"
            log(note)
            return note
        scenarios["rest_contribute"] = measure(
            "rest_contribute",
            "REST contribute (gateway)",
            replace(base, kind="rest_contribute", target=base_url),
            server,
            gateway,
        )
    return "measured against `jackpot gateway` (a separate process, like in production)"


def rss_scenario(
    args: argparse.Namespace,
    base: LoadSpec,
    scenarios: dict[str, Scenario],
    server: Service,
    target: str,
) -> dict[str, Any]:
    """(f) server RSS before and after `--rss-contributions` contributions via ContributeBatch."""
    per_call = args.batch_items
    calls = max(1, -(-args.rss_contributions // per_call))
    time.sleep(0.5)
    before = server.rss()
    peak = [before]

    def sample() -> None:
        peak[0] = max(peak[0], server.rss())

    scenarios["rss_run"] = measure(
        "rss_run",
        f"RSS run: {calls * per_call:,} via ContributeBatch",
        replace(
            base,
            kind="contribute_batch",
            target=target,
            concurrency=args.batch_concurrency,
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
    return {
        "contributions": scenarios["rss_run"].result.total_ok_items,
        "before_bytes": before,
        "after_bytes": after,
        "peak_bytes": peak[0],
        "change_pct": round(100.0 * (after - before) / before, 2),
        "measured_after": "health, Contribute, GetPools and ContributeBatch scenarios",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        log("interrupted; every process started here has been stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
