"""The run: fresh databases, `jackpot serve` (and `jackpot gateway`) as subprocesses, every
scenario in order, the audits, then the report.

Everything started here is stopped in `finally` blocks, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from bench import audit_scenario, grpcjs_probe, ledger_floor, scenarios, watch_scenario
from bench import ledger_ab as ledger_ab_scenario
from bench import report as reporting
from bench.console import log
from bench.loadgen import LoadSpec
from bench.scenarios import Scenario
from jackpot_grpc.adapters import clients_file, migrations
from jackpot_grpc.config import Settings
from jackpot_grpc.service.reports import audit_report, run_audit
from testkit.database import scratch_database
from testkit.edge import haproxy_in_front
from testkit.ledger import table_counts
from testkit.ports import free_port
from testkit.processes import ServiceProcess, http_ok, local_service_env
from testkit.scratch import admin_server
from testkit.tools import find_tool

ROOT = Path(__file__).resolve().parent.parent


def run(args: argparse.Namespace) -> int:
    """Every scenario, batching off then on, each on a fresh database; 0 if books balance."""
    check_installed()
    base = base_spec(args)
    found: dict[str, Scenario] = {}
    report = reporting.new_report(args)
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="jackpot-bench-") as tmp,
        admin_database(args.database) as (admin, kind),
    ):
        workdir = Path(tmp)
        base = dataclasses.replace(base, token=bench_client(workdir))
        report["machine"] = reporting.machine_info(admin, kind)
        log(f"PostgreSQL ({kind}): {report['machine']['postgresql']}")
        if args.only_ledger:
            return only_ledger(args, base, admin, workdir, report, started)
        report["audit_batching_off"] = batching_off(args, base, admin, workdir, found)
        rest_note, report["rss"], report["audit"] = batching_on(args, base, admin, workdir, found)
        if args.scaling_workers > args.server_workers:
            report["audit_scaling"] = scaling(args, base, admin, workdir, found)
        report["grpcjs_probe"] = grpcjs(args, admin, workdir, base)
        if args.ledger_ab_rounds:
            report["ledger_ab"] = ledger_ab(args, base, admin, workdir)
        report["audit_scenario"] = audit_cost(args, admin)
        if args.watchers or args.sse_watchers:
            report["watch_scenario"] = watch_cost(args, admin, workdir)
    report["rest_note"] = rest_note
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    reporting.conclude(report, found, rest_note)
    reporting.write(report, args.output)
    return 0 if reporting.balanced(report) else 1


def grpcjs(args: argparse.Namespace, admin: str, workdir: Path, base: LoadSpec) -> dict[str, Any]:
    """The independent grpc-js probe (bench/grpcjs_probe.py), at --concurrency in flight
    for --duration each; a note instead without node and npm or with --no-grpcjs."""
    if args.no_grpcjs or not grpcjs_probe.node_available():
        note = "skipped: " + ("--no-grpcjs" if args.no_grpcjs else "node or npm not installed")
        log(f"grpc-js probe {note}")
        return {"skipped": note}
    try:
        return grpcjs_probe.measure(
            admin, workdir, base.token or "", args.duration, args.concurrency
        )
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        note = f"skipped: {str(exc).splitlines()[0]}"
        log(f"grpc-js probe {note}")
        return {"skipped": note}


def only_ledger(
    args: argparse.Namespace,
    base: LoadSpec,
    admin: str,
    workdir: Path,
    report: dict[str, Any],
    started: float,
) -> int:
    """`--only-ledger`: the ledger's A/B and the audit scenario, nothing else."""
    if args.ledger_ab_rounds:
        report["ledger_ab"] = ledger_ab(args, base, admin, workdir)
    report["audit_scenario"] = audit_cost(args, admin)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    if args.ledger_ab_rounds:
        print(ledger_ab_scenario.summary(report["ledger_ab"]))
    print(audit_scenario.summary(report["audit_scenario"]))
    print(ledger_floor.report_line(report))
    reporting.write(report, args.output)
    return 0 if report["audit_scenario"]["balanced"] else 1


def bench_client(workdir: Path) -> str:
    """A game client in the servers' clients file: the bench runs as production does."""
    token = clients_file.add_client(workdir / "clients.json", "bench", "game")
    assert token is not None
    return token


def ledger_ab(
    args: argparse.Namespace, base: LoadSpec, admin: str, workdir: Path
) -> dict[str, Any]:
    """Contribute and ContributeBatch with the ledger's checkpoint signer on and off,
    alternating on fresh databases (bench/ledger_ab.py)."""
    runs: list[ledger_ab_scenario.Run] = []
    for round_no in range(args.ledger_ab_rounds):
        for signing in (False, True):
            extra = ledger_ab_scenario.signer_env(workdir, round_no) if signing else {}
            label = f"ab{round_no}_{'on' if signing else 'off'}"
            with (
                bench_database(admin, label) as url,
                server(args, url, workdir, batching=True, extra_env=extra) as srv,
            ):
                last = round_no == args.ledger_ab_rounds - 1
                rss = min(args.rss_contributions, ledger_ab_scenario.RSS_CAP) if last else 0
                runs.append(
                    ledger_ab_scenario.run_once(base, srv, signing, args.batch_concurrency, rss)
                )
    return ledger_ab_scenario.summarise(runs)


def audit_cost(args: argparse.Namespace, admin: str) -> dict[str, Any]:
    """The audit's cost per million ledger rows (bench/audit_scenario.py)."""
    with bench_database(admin, "audit") as url:
        log(f"audit scenario: {args.audit_rows:,} contributions")
        result = audit_scenario.measure(url, args.audit_rows)
        result["ledger_floor"] = ledger_floor.measure(url)
        return result


def watch_cost(args: argparse.Namespace, admin: str, workdir: Path) -> dict[str, Any]:
    """WatchPools: many watchers on one server (bench/watch_scenario.py)."""
    result = watch_scenario.measure(
        admin,
        workdir,
        grpc_watchers=args.watchers,
        sse_watchers=args.sse_watchers,
        duration=args.duration,
        concurrency=args.concurrency,
    )
    log(f"watch scenario: {result}")
    return result


def check_installed() -> None:
    script = Path(sys.executable).parent / "jackpot"
    if not script.exists():
        raise SystemExit(f"{script} not found: run `make bench` (it installs the virtualenv)")


def base_spec(args: argparse.Namespace) -> LoadSpec:
    """Every load is this one with its kind, target and perhaps concurrency replaced."""
    return LoadSpec(
        "contribute",
        "",
        args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
        channels=args.channels,
        batch_items=args.batch_items,
        idempotency_keys=args.idempotency_keys,
    )


def batching_off(
    args: argparse.Namespace,
    base: LoadSpec,
    admin: str,
    workdir: Path,
    found: dict[str, Scenario],
) -> dict[str, Any]:
    """(b) Contribute with batching off, on a database of its own; that database's audit."""
    with bench_database(admin, "off") as url:
        with server(args, url, workdir, batching=False) as srv:
            found["contribute_nobatch"] = scenarios.contribute_nobatch(base, srv, url)
        acknowledged = found["contribute_nobatch"].result.total_ok_items
        return audited(url, acknowledged)


def batching_on(
    args: argparse.Namespace,
    base: LoadSpec,
    admin: str,
    workdir: Path,
    found: dict[str, Scenario],
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Everything else: batching on (the default), one fresh database.

    (REST note, RSS figures, audit of the database.)
    """
    with bench_database(admin, "on") as url:
        with server(args, url, workdir, batching=True) as srv:
            found["health"] = scenarios.health(base, srv)
            found["contribute_batching"] = scenarios.contribute_batching(
                base, srv, url, args.profile, args.server_workers
            )
            edge_step(args, base, srv, workdir, found)
            found["get_pools"] = scenarios.get_pools(base, srv)
            found["contribute_batch"] = scenarios.contribute_batch(
                base, srv, args.batch_concurrency
            )
            rest_note = rest_step(args, base, srv, workdir, found)
            found["rss_run"], rss = scenarios.rss_run(
                base, srv, args.rss_contributions, args.batch_concurrency
            )
        acknowledged = sum(
            found[k].result.total_ok_items for k in scenarios.CONTRIBUTING if k in found
        )
        return rest_note, rss, audited(url, acknowledged)


def scaling(
    args: argparse.Namespace,
    base: LoadSpec,
    admin: str,
    workdir: Path,
    found: dict[str, Scenario],
) -> dict[str, Any]:
    """(h) Contribute against `serve --workers N` (N = --scaling-workers), on a database of
    its own, so the table shows how Contribute scales past one process; its audit."""
    workers = args.scaling_workers
    spec = dataclasses.replace(base, channels=4 * workers)
    with bench_database(admin, "scaling") as url:
        with server(args, url, workdir, batching=True, workers=workers) as srv:
            found["contribute_workers"] = scenarios.contribute_workers(spec, srv, url, workers)
        return audited(url, found["contribute_workers"].result.total_ok_items)


def rest_step(
    args: argparse.Namespace,
    base: LoadSpec,
    srv: ServiceProcess,
    workdir: Path,
    found: dict[str, Scenario],
) -> str:
    """(g) REST contribute through `jackpot gateway`; a note instead when it is unavailable."""
    if args.no_gateway:
        return "skipped: --no-gateway"
    rest_port = free_port()
    env = {
        **srv.env,
        "REST_HOST": "127.0.0.1",
        "REST_PORT": str(rest_port),
        "HEALTH_PORT": str(free_port()),
        "JACKPOT_GRPC_TARGET": f"localhost:{srv.grpc_port}",
    }
    base_url = f"http://127.0.0.1:{rest_port}"
    with service("gateway", ["gateway"], env, workdir) as gateway:
        pools = f"{base_url}/api/jackpot/pools"
        try:
            gateway.wait_until(
                lambda: http_ok(pools, token=base.token), 20, f"answering {pools}", interval=0.2
            )
        except RuntimeError as exc:
            problem = str(exc).splitlines()[0].removeprefix("jackpot gateway ")
            last_line = (gateway.tail(1) or "no output").strip()
            note = f"skipped: `jackpot gateway` is not available ({problem}: {last_line})"
            log(note)
            return note
        found["rest_contribute"] = scenarios.rest_contribute(base, srv, gateway, base_url)
    return "measured against `jackpot gateway` (a separate process, like in production)"


def edge_step(
    args: argparse.Namespace,
    base: LoadSpec,
    srv: ServiceProcess,
    workdir: Path,
    found: dict[str, Scenario],
) -> str:
    """(i) Contribute through HAProxy with the generated config, against the same server
    as (c), so the two give the edge's cost; a note instead when HAProxy is missing."""
    tool = find_tool("haproxy")
    if args.no_edge or tool is None:
        note = "skipped: " + ("--no-edge" if args.no_edge else "haproxy not installed")
        log(f"edge {note}")
        return note
    with haproxy_in_front([srv], workdir / "edge", tool) as edge:
        found["contribute_edge"] = scenarios.contribute_edge(base, srv, edge.target)
    return "measured through HAProxy (make edge-tools)"


# --- databases -----------------------------------------------------------------------------


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
    with scratch_database(admin, f"jackpot_bench_{label}") as url:
        migrations.upgrade(url)
        yield url


def audited(url: str, acknowledged: int) -> dict[str, Any]:
    """`jackpot audit --json` (every pool reconciled against its ledger), the ledger's
    size, and how many contributions the load generators were told were applied."""
    defaults = Settings.from_env({})
    small = dataclasses.replace(defaults.database, pool_min_size=1, pool_max_size=2)
    settings = dataclasses.replace(defaults, database=small)
    return {
        **audit_report(asyncio.run(run_audit(settings, url))),
        "ledger_rows": table_counts(url)["contributions"],
        "acknowledged_contributions": acknowledged,
    }


# --- processes -----------------------------------------------------------------------------


@contextlib.contextmanager
def server(
    args: argparse.Namespace,
    url: str,
    workdir: Path,
    *,
    batching: bool,
    workers: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[ServiceProcess]:
    """`jackpot serve --no-migrate [--workers N]`, SERVING (every worker listening)."""
    label = "on" if batching else "off"
    env = {
        **os.environ,  # the developer's settings apply (e.g. JACKPOT_EVENT_LOOP=asyncio)
        **local_service_env(url, workdir / f"logs-{label}"),
        "JACKPOT_BATCHING": label,
        "JACKPOT_CLIENTS_FILE": str(workdir / "clients.json"),  # written by bench_client
        **(extra_env or {}),
    }
    workers = args.server_workers if workers is None else workers
    command = ["serve", "--no-migrate"]
    if workers > 1:
        command += ["--workers", str(workers)]
    name = "server" if batching else "server-batching-off"
    name += f"-{workers}w" if workers > 1 else ""
    with service(name, command, env, workdir) as srv:
        wait_ready(srv, workers, timeout=60.0)
        yield srv


@contextlib.contextmanager
def service(
    name: str, command: list[str], env: dict[str, str], workdir: Path
) -> Iterator[ServiceProcess]:
    """`jackpot <command>` in its own session (Ctrl-C reaches only us), stopped on exit."""
    running = ServiceProcess(command, env, workdir, name=name, new_session=True)
    running.launch()
    try:
        yield running
    finally:
        code = running.stop()
        if running.killed:
            log(f"{name} ignored SIGTERM; killed it")
        if code not in (0, None, -signal.SIGTERM):
            log(f"{name} exited with code {code}; last output:\n{running.tail()}")


def wait_ready(srv: ServiceProcess, workers: int, timeout: float) -> None:
    """Until grpc.health.v1 says SERVING (or the process dies).

    With `serve --workers N`, first until all N children listen on the port (a worker
    starts listening only after its health is known).
    """
    started = time.monotonic()
    if workers > 1:
        srv.wait_until(
            lambda: listening_workers(srv) >= workers, timeout, f"{workers} workers listening"
        )
    srv.wait_serving(max(0.0, timeout - (time.monotonic() - started)))


def listening_workers(srv: ServiceProcess) -> int:
    return sum(_listening(child, srv.grpc_port) for child in srv.processes()[1:])


def _listening(proc: psutil.Process, port: int) -> bool:
    with contextlib.suppress(psutil.Error):
        for conn in proc.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return True
    return False
