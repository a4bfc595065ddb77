"""The bench's targets are ratios to the same run's health Check (bench/report.py): known
figures in, each target met or missed as issue 30 defines it."""

from __future__ import annotations

from bench.loadgen import LoadResult
from bench.report import Target, evaluate, grpcjs_target
from bench.scenarios import Scenario


def scenario(
    key: str, calls: float, server_cpu_pct: float, p99_ms: float, items: int = 1
) -> Scenario:
    """`calls` calls/s in a 1 s window (each of `items` items), every latency `p99_ms`."""
    result = LoadResult(
        "contribute", 64, 1.0, int(calls), int(calls) * items, {}, [p99_ms] * int(calls)
    )
    return Scenario(key, key, result, server_cpu_pct, 0.0, server_cpu_pct)


def by_name(targets: list[Target]) -> dict[str, Target]:
    return {t.name: t for t in targets}


def run(
    contribute_cpu: float, get_pools_cpu: float, batch_items: int, p99: float
) -> dict[str, Target]:
    # The Check: 1,000 calls/s at 100 % of a core (1,000 µs per call), p99 20 ms.
    found = {
        "health": scenario("health", 1000, 100.0, 20.0),
        "contribute_batching": scenario("contribute_batching", 500, 50.0 * contribute_cpu, p99),
        "contribute_nobatch": scenario("contribute_nobatch", 100, 50.0, 100.0),
        "get_pools": scenario("get_pools", 800, 80.0 * get_pools_cpu, 20.0),
        "contribute_batch": scenario("contribute_batch", 25, 50.0, 100.0, batch_items),
    }
    return by_name(evaluate(found, 1.0, "skipped: --no-gateway"))


def test_the_ratios_are_met_at_their_goals() -> None:
    # Contribute at 1,250 µs per call is 0.8 of the Check per CPU-second; GetPools at 1,111 µs 0.9.
    targets = run(contribute_cpu=1.25, get_pools_cpu=1.111, batch_items=1000, p99=30.0)
    assert targets["Contribute(batching) / health ceiling, per CPU-second"].met is True
    assert targets["GetPools / health ceiling, per CPU-second"].met is True
    assert targets["ContributeBatch items/s / health calls/s"].value == 25.0
    assert targets["ContributeBatch items/s / health calls/s"].met is True
    assert targets["Contribute(batching) p99 / health Check p99"].value == 1.5
    assert targets["Contribute(batching) p99 / health Check p99"].met is True
    assert targets["REST / gRPC Contribute throughput"].met is None  # skipped
    assert [t.as_dict()["status"] for t in targets.values()].count("met") == 6


def test_the_ratios_are_missed_past_their_goals() -> None:
    targets = run(contribute_cpu=1.3, get_pools_cpu=1.2, batch_items=900, p99=31.0)
    assert targets["Contribute(batching) / health ceiling, per CPU-second"].met is False
    assert targets["GetPools / health ceiling, per CPU-second"].met is False
    assert targets["ContributeBatch items/s / health calls/s"].met is False
    assert targets["Contribute(batching) p99 / health Check p99"].met is False
    assert targets["GetPools / health ceiling, per CPU-second"].as_dict()["status"] == "MISSED"
    # The calls/s ratio stays in the note: 500 against 1,000 calls/s.
    assert (
        "in calls/s: 0.50" in targets["Contribute(batching) / health ceiling, per CPU-second"].note
    )


def test_the_grpcjs_probe_is_judged_or_skipped() -> None:
    probe = {
        "in_flight": 64,
        "check_calls_per_s": 2000,
        "contribute_calls_per_s": 1500,
        "contribute_over_check": 0.75,
    }
    assert grpcjs_target(probe).met is False
    assert grpcjs_target({**probe, "contribute_over_check": 0.8}).met is True
    skipped = grpcjs_target({"skipped": "skipped: node or npm not installed"})
    assert (skipped.met, skipped.note) == (None, "skipped: node or npm not installed")
