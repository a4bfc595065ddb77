"""The ledger A/B's summary (bench/ledger_ab.py): known loads in, the ratios and the RSS of
the last round's servers out."""

from __future__ import annotations

from bench.ledger_ab import Run, summarise, summary
from bench.loadgen import LoadResult
from bench.scenarios import Scenario


def load(items_per_s: int, server_pct: float, pg_pct: float) -> Scenario:
    """`items_per_s` items in a 1 s window at the given CPU (% of a core)."""
    result = LoadResult("contribute_batch", 4, 1.0, items_per_s, items_per_s, {}, [10.0])
    return Scenario("batch", "batch", result, server_pct, pg_pct, server_pct + pg_pct)


def rss(before_mib: float, after_mib: float) -> dict[str, float | int]:
    before, after = int(before_mib * 2**20), int(after_mib * 2**20)
    return {
        "contributions": 500_000,
        "before_bytes": before,
        "after_bytes": after,
        "peak_bytes": after,
        "change_pct": round(100.0 * (after - before) / before, 2),
    }


def test_the_ratios_compare_medians_and_the_rss_of_both_arms_is_reported() -> None:
    off = load(50_000, 50.0, 50.0)  # 10 µs of server and 10 of PostgreSQL CPU per item
    on = load(50_000, 55.0, 70.0)  # 11 and 14
    runs = [
        Run(False, off, off, 0),
        Run(True, on, on, 12),
        Run(False, off, off, 0, rss(100.0, 101.0)),
        Run(True, on, on, 11, rss(200.0, 198.0)),
    ]

    result = summarise(runs)

    assert result["rounds"] == 2
    assert result["batch"]["cpu_per_item_ratio_on_to_off"] == 1.1
    assert result["batch"]["service_and_pg_cpu_per_item_ratio_on_to_off"] == 1.25
    assert result["checkpoints_signed_on"] == [12, 11]
    assert result["rss"]["on"]["change_pct"] == -1.0
    text = summary(result)
    assert "RSS, signing on: 200.0 -> 198.0 MiB (-1.00 %" in text
    assert "RSS, signing off: 100.0 -> 101.0 MiB (+1.00 %" in text


def test_a_run_without_rss_reports_none() -> None:
    off = load(1_000, 10.0, 10.0)
    result = summarise([Run(False, off, off, 0), Run(True, off, off, 3)])

    assert result["rss"] == {}
    assert "RSS" not in summary(result)
