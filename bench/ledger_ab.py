"""The tamper-evident ledger's A/B: what hashing and signing cost Contribute and
ContributeBatch (docs/LEDGER.md, BENCHMARKS.md).

The A/B setting is the ledger key itself: with `JACKPOT_LEDGER_KEY_FILE` and
`JACKPOT_CHECKPOINT_LOG` set the server signs checkpoints (here every second, so rows are
encoded, hashed and signed while the load runs, in the signer's worker process); without
them it signs nothing and hashes nothing. Both arms claim each row's leaf index in the
writing transaction (the receipt is not optional), so that cost is in both. Each round runs
off then on, each on a fresh database, and the ratios compare the medians over rounds:
throughput, and server CPU per item (the server's processes, the signer's worker included).
The last round's two servers then take an RSS run each (scenarios.rss_run, up to RSS_CAP
contributions): the server's memory, its signer's worker included, with signing on and off.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.loadgen import LoadSpec
from jackpot_grpc.ledger.checkpoint import split_log
from jackpot_grpc.ledger.note import Signer
from testkit.processes import ServiceProcess

INTERVAL = 1.0  # JACKPOT_CHECKPOINT_INTERVAL in the "on" arm
KEY_NAME = "bench-ledger"
RSS_CAP = 500_000  # contributions of the last round's RSS runs (--rss-contributions, capped)


@dataclass(frozen=True)
class Run:
    signing: bool
    contribute: scenarios.Scenario
    batch: scenarios.Scenario
    checkpoints: int  # signed during the run ("on" only)
    rss: dict[str, Any] | None = None  # scenarios.rss_run's figures (the last round only)


def signer_env(workdir: Path, round_no: int) -> dict[str, str]:
    key = workdir / "ab-ledger.key"
    if not key.exists():
        key.write_text(Signer.generate(KEY_NAME).text() + "\n")
        key.chmod(0o600)
    return {
        "JACKPOT_LEDGER_KEY_FILE": str(key),
        "JACKPOT_CHECKPOINT_LOG": str(workdir / f"ab-checkpoints-{round_no}.log"),
        "JACKPOT_CHECKPOINT_INTERVAL": str(INTERVAL),
    }


def run_once(
    base: LoadSpec,
    srv: ServiceProcess,
    signing: bool,
    batch_concurrency: int,
    rss_contributions: int = 0,
) -> Run:
    arm = "ledger signing on" if signing else "ledger signing off"
    if signing:
        time.sleep(2 * INTERVAL)  # the signer's worker process is up (and counted)
    contribute = scenarios.measure(
        f"ab_contribute_{'on' if signing else 'off'}",
        f"Contribute, batching on, {arm}",
        replace(base, target=srv.target),
        srv,
    )
    batch = scenarios.measure(
        f"ab_batch_{'on' if signing else 'off'}",
        f"ContributeBatch ({base.batch_items} items), {arm}",
        replace(base, kind="contribute_batch", target=srv.target, concurrency=batch_concurrency),
        srv,
    )
    rss = None
    if rss_contributions:
        _, rss = scenarios.rss_run(base, srv, rss_contributions, batch_concurrency)
    log = srv.env.get("JACKPOT_CHECKPOINT_LOG")
    signed = len(list(split_log(Path(log).read_text()))) if log and Path(log).exists() else 0
    return Run(signing, contribute, batch, signed, rss)


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v]
    return statistics.median(known) if known else None


def _sum(a: float | None, b: float | None) -> float | None:
    return a + b if a is not None and b is not None else None


def _ratio(on: float | None, off: float | None) -> float | None:
    return round(on / off, 3) if on and off else None


def summarise(runs: list[Run]) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": len(runs) // 2, "checkpoint_interval_s": INTERVAL}
    for name in ("contribute", "batch"):
        arms: dict[str, dict[str, Any]] = {}
        for signing in (False, True):
            picked = [getattr(r, name) for r in runs if r.signing is signing]
            arms["on" if signing else "off"] = {
                "items_per_s": [round(s.result.items_per_s, 1) for s in picked],
                "cpu_us_per_item": [
                    None if s.cpu_us_per_item is None else round(s.cpu_us_per_item, 1)
                    for s in picked
                ],
                "median_items_per_s": _median([s.result.items_per_s for s in picked]),
                "median_cpu_us_per_item": _median([s.cpu_us_per_item for s in picked]),
                # PostgreSQL's CPU per item too: with the signer on, it encodes and hashes.
                "median_pg_cpu_us_per_item": _median(
                    [
                        1e6 * s.postgres_cpu_pct / 100 / s.result.items_per_s
                        for s in picked
                        if s.result.items_per_s
                    ]
                ),
                "errors": sum(s.result.errors or 0 for s in picked),
            }
        out[name] = {
            **arms,
            "throughput_ratio_on_to_off": _ratio(
                arms["on"]["median_items_per_s"], arms["off"]["median_items_per_s"]
            ),
            "cpu_per_item_ratio_on_to_off": _ratio(
                arms["on"]["median_cpu_us_per_item"], arms["off"]["median_cpu_us_per_item"]
            ),
            "service_and_pg_cpu_per_item_ratio_on_to_off": _ratio(
                _sum(arms["on"]["median_cpu_us_per_item"], arms["on"]["median_pg_cpu_us_per_item"]),
                _sum(
                    arms["off"]["median_cpu_us_per_item"], arms["off"]["median_pg_cpu_us_per_item"]
                ),
            ),
        }
    out["checkpoints_signed_on"] = [r.checkpoints for r in runs if r.signing]
    out["rss"] = {"on" if r.signing else "off": r.rss for r in runs if r.rss is not None}
    return out


def summary(result: dict[str, Any]) -> str:
    lines = [f"ledger A/B ({result['rounds']} rounds, signer every {INTERVAL:g} s when on):"]
    for name, title in (("contribute", "Contribute"), ("batch", "ContributeBatch")):
        part = result[name]
        lines.append(
            f"  {title}: {part['off']['median_items_per_s'] or 0:,.0f} -> "
            f"{part['on']['median_items_per_s'] or 0:,.0f} items/s"
            f" (on/off {part['throughput_ratio_on_to_off']}), server CPU per item on/off"
            f" {part['cpu_per_item_ratio_on_to_off']}, server and PostgreSQL CPU per item"
            f" {part['service_and_pg_cpu_per_item_ratio_on_to_off']}"
        )
    lines.append(f"  checkpoints signed during the 'on' runs: {result['checkpoints_signed_on']}")
    for arm, rss in sorted(result.get("rss", {}).items(), reverse=True):
        lines.append(
            f"  RSS, signing {arm}: {rss['before_bytes'] / 2**20:,.1f} ->"
            f" {rss['after_bytes'] / 2**20:,.1f} MiB ({rss['change_pct']:+.2f} %, peak"
            f" {rss['peak_bytes'] / 2**20:,.1f} MiB) across {rss['contributions']:,}"
            " contributions via ContributeBatch"
        )
    return "\n".join(lines)
