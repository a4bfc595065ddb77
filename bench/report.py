"""What a bench run reports: the targets it checks, the tables it prints, the JSON it writes."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench import audit_scenario, ledger_ab, ledger_floor
from bench.scenarios import ORDER, Scenario

ROOT = Path(__file__).resolve().parent.parent
# Other processes' CPU (in % of one core) above which a scenario is reported as noisy.
NOISE_PCT = 25


def new_report(args: argparse.Namespace) -> dict[str, Any]:
    """The report's settings; the run fills in the rest."""
    return {
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "batch_concurrency": args.batch_concurrency,
            "batch_items": args.batch_items,
            "rss_contributions": args.rss_contributions,
            "channels": args.channels,
            "server_workers": args.server_workers,
            "scaling_workers": args.scaling_workers,
            "idempotency_keys": args.idempotency_keys,
            "quick": args.quick,
            "profiled": args.profile is not None,
            "client": "closed loop, grpc.aio, one spawned process per scenario",
        },
        "notes": [],
    }


def conclude(report: dict[str, Any], scenarios: dict[str, Scenario], rest_note: str) -> None:
    """Add the scenarios, the targets and the noise notes to the report, print it all."""
    ordered = [scenarios[k] for k in ORDER if k in scenarios]
    targets = evaluate(scenarios, report["rss"]["change_pct"], rest_note)
    targets.append(grpcjs_target(report.get("grpcjs_probe")))
    report["scenarios"] = {s.key: s.summary() for s in ordered}
    report["targets"] = [t.as_dict() for t in targets]
    noisy = {s.key: round(s.other_cpu_pct) for s in ordered if s.other_cpu_pct > NOISE_PCT}
    if noisy:
        report["notes"].append(
            f"other processes used more than {NOISE_PCT}% of a core during {sorted(noisy)}: "
            "the machine was shared, so throughputs and ratios of this run are noisy"
        )
    report["noise_other_cpu_pct"] = {s.key: round(s.other_cpu_pct, 1) for s in ordered}
    print()
    print(table(ordered))
    print()
    print(target_table(targets))
    print()
    for note in report["notes"]:
        print(f"NOTE: {note}")
    print_ledgers(report, scenarios)


def print_ledgers(report: dict[str, Any], scenarios: dict[str, Scenario]) -> None:
    """The audits, the commits the ledger rows took, and the server's memory."""
    for label, key in (("batching off", "audit_batching_off"), ("batching on", "audit")):
        a = report[key]
        verdict = "books balance" if a["balanced"] else "BOOKS DO NOT BALANCE"
        print(
            f"audit ({label} database): {verdict}"
            f"; ledger rows {a['ledger_rows']:,}, acknowledged contributions "
            f"{a['acknowledged_contributions']:,}"
        )
    if report.get("ledger_ab"):
        print(ledger_ab.summary(report["ledger_ab"]))
    print(audit_scenario.summary(report["audit_scenario"]))
    print(ledger_floor.report_line(report))
    for key in ("contribute_nobatch", "contribute_batching"):
        extra = scenarios[key].extra
        print(
            f"{scenarios[key].title}: {extra['ledger_rows']:,} ledger rows in "
            f"{extra['transactions']:,} transactions "
            f"({extra['mean_rows_per_transaction']} per commit)"
        )
    scaled = scenarios.get("contribute_workers")
    if scaled is not None:
        one = scenarios["contribute_batching"]
        split = scaled.extra["server_cpu_pct_by_process"]
        print(
            f"{scaled.title}: {fmt(ratio(scaled.result.calls_per_s, one.result.calls_per_s), 2)}"
            f"x the calls/s of one ({scaled.result.calls_per_s:,.0f} against "
            f"{one.result.calls_per_s:,.0f}); server CPU {scaled.server_cpu_pct:.0f}% "
            f"(supervisor {split[0]:.0f}%, workers {', '.join(f'{c:.0f}%' for c in split[1:])}), "
            f"PostgreSQL {scaled.postgres_cpu_pct:.0f}%, client "
            f"{scaled.result.client_cpu_pct:.0f}%, other {scaled.other_cpu_pct:.0f}%; "
            f"{scaled.cpu_us_per_item or 0:.0f} against {one.cpu_us_per_item or 0:.0f} "
            "server CPU µs per call"
        )
        a = report["audit_scaling"]
        verdict = "books balance" if a["balanced"] else "BOOKS DO NOT BALANCE"
        print(
            f"audit ({scaled.key} database): {verdict}; ledger rows {a['ledger_rows']:,}, "
            f"acknowledged contributions {a['acknowledged_contributions']:,}"
        )
    rss_info = report["rss"]
    print(
        f"server RSS: {rss_info['before_bytes'] / 2**20:.1f} MiB before, "
        f"{rss_info['after_bytes'] / 2**20:.1f} MiB after {rss_info['contributions']:,} "
        f"contributions (peak {rss_info['peak_bytes'] / 2**20:.1f} MiB)"
    )


def write(report: dict[str, Any], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {output} in {report['elapsed_s']:.0f}s")


def balanced(report: dict[str, Any]) -> bool:
    return bool(
        report["audit"]["balanced"]
        and report["audit_batching_off"]["balanced"]
        and report["audit_scenario"]["balanced"]
        and report.get("audit_scaling", {"balanced": True})["balanced"]
    )


# --- targets -------------------------------------------------------------------------------


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

    @property
    def status(self) -> str:
        return "skipped" if self.met is None else ("met" if self.met else "MISSED")

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": None if self.value is None else round(self.value, 4),
            "goal": self.goal,
            "met": self.met,
            "status": self.status,
            "unit": self.unit,
            "note": self.note,
        }


def at_least(name: str, value: float | None, goal: float, unit: str = "", note: str = "") -> Target:
    met = None if value is None else value >= goal
    return Target(name, value, f">= {goal:g}", met, unit, note)


def at_most(name: str, value: float | None, goal: float, unit: str = "", note: str = "") -> Target:
    met = None if value is None else value <= goal
    return Target(name, value, f"<= {goal:g}", met, unit, note)


# The targets are ratios to the same run's empty call (the grpc.health.v1 Check), so they
# hold on any machine: a machine twice as slow halves both sides (issue 30).
CEILING = "health"
P99_CONCURRENCY = 64  # the p99 target compares Contribute and the Check at this many in flight


def per_cpu_second(s: dict[str, Scenario], numerator: str, denominator: str) -> float | None:
    """Calls per CPU-second of `numerator` over `denominator`'s: the inverse ratio of their
    server CPU per call, the figure other processes on the machine barely move."""
    a, b = s[numerator].cpu_us_per_item, s[denominator].cpu_us_per_item
    return ratio(b, a) if a and b else None


def evaluate(s: dict[str, Scenario], rss_change: float | None, rest_note: str) -> list[Target]:
    health = s[CEILING].result.calls_per_s
    batching = s["contribute_batching"].result.calls_per_s

    def per_cpu(numerator: str, denominator: str) -> str:
        return f"per CPU-second of the service: {fmt(per_cpu_second(s, numerator, denominator), 2)}"

    def calls(key: str) -> str:
        return f"in calls/s: {fmt(ratio(s[key].result.calls_per_s, health), 2)}"

    batch = s["contribute_batch"].result.items_per_s
    targets = [
        at_least(
            "Contribute(batching) / health ceiling, per CPU-second",
            per_cpu_second(s, "contribute_batching", CEILING),
            0.8,
            note=calls("contribute_batching"),
        ),
        at_least(
            "Contribute(batching) / Contribute(no batching)",
            ratio(batching, s["contribute_nobatch"].result.calls_per_s),
            2,
        ),
        at_least(
            "GetPools / health ceiling, per CPU-second",
            per_cpu_second(s, "get_pools", CEILING),
            0.9,
            note=calls("get_pools"),
        ),
        at_least(
            "ContributeBatch items/s / health calls/s",
            ratio(batch, health),
            25,
            note=f"{fmt(batch, 0)} contributions/s against {fmt(health, 0)} Check calls/s",
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
    edge = s.get("contribute_edge")
    targets.append(
        at_least(
            "Contribute through the edge / direct",
            ratio(edge.result.calls_per_s, batching) if edge else None,
            0.9,
            note=per_cpu("contribute_edge", "contribute_batching") + " (server only)"
            if edge
            else "skipped: no HAProxy (make edge-tools) or --no-edge",
        )
    )
    targets.append(p99_target(s["contribute_batching"], s[CEILING]))
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


def grpcjs_target(probe: dict[str, Any] | None) -> Target:
    """The independent grpc-js probe's Contribute / Check (bench/grpcjs_probe.py)."""
    if not probe or "skipped" in probe:
        note = probe["skipped"] if probe else "skipped: not run"
        return Target("grpc-js probe: Contribute / Check calls/s", None, ">= 0.8", None, "", note)
    return at_least(
        "grpc-js probe: Contribute / Check calls/s",
        probe["contribute_over_check"],
        0.8,
        note=f"Check {probe['check_calls_per_s']:,} calls/s, Contribute "
        f"{probe['contribute_calls_per_s']:,} calls/s, {probe['in_flight']} in flight",
    )


def p99_target(contribute: Scenario, ceiling: Scenario) -> Target:
    """Contribute's p99 over the Check's, both at P99_CONCURRENCY in flight: queueing at
    saturation is in both, so what is left is Contribute's own spread (the batch cycle)."""
    mine = contribute.result.summary()["latency_ms"]["p99"]
    theirs = ceiling.result.summary()["latency_ms"]["p99"]
    in_flight = {contribute.result.concurrency, ceiling.result.concurrency}
    at = "/".join(str(n) for n in sorted(in_flight))
    note = f"Contribute {fmt(mine, 1)} ms, Check {fmt(theirs, 1)} ms, at {at} in flight"
    if in_flight != {P99_CONCURRENCY}:
        note += f"; the target is defined at {P99_CONCURRENCY} in flight for both (--concurrency)"
    value = ratio(mine, theirs) if mine is not None and theirs is not None else None
    return at_most("Contribute(batching) p99 / health Check p99", value, 1.5, note=note)


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
    lines.append("server CPU us/item by thread (event loop / batch thread / grpc and other):")
    for sc in scenarios:
        split = sc.extra.get("server_cpu_us_per_item_by_thread")
        if split is not None:
            lines.append(f"    {sc.title:<38} " + " / ".join(f"{v:,.0f}" for v in split.values()))
    return "\n".join(lines)


def target_table(targets: list[Target]) -> str:
    lines = [f"{'target':<48} {'value':>14} {'goal':>12}  status"]
    for t in targets:
        status = t.status
        value = fmt(t.value, 0 if (t.value or 0) >= 1000 else 2) + (f" {t.unit}" if t.unit else "")
        lines.append(f"{t.name:<48} {value:>14} {t.goal:>12}  {status}")
        if t.note:
            lines.append(f"    note: {t.note}")
    return "\n".join(lines)


# --- the machine -------------------------------------------------------------------------------


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


def postgres_version(admin: str) -> str:
    with psycopg.connect(admin) as conn:
        row = conn.execute("SELECT version()").fetchone()
    return str(row[0]) if row else "unknown"
