"""The bench's floor of a leaf's cost (bench/ledger_floor.py) on a real ledger: every probe
runs on PostgreSQL and prices its step, and the budget it is held against is 5 % of the
A/B's ContributeBatch item without signing."""

from __future__ import annotations

from bench import ledger_floor
from bench.audit_scenario import fill_ledger


def test_every_step_of_a_leaf_is_priced_on_a_real_ledger(database_url: str) -> None:
    fill_ledger(database_url, 2_000)

    floor = ledger_floor.measure(database_url)

    assert floor["rows"] == 2_000
    per = floor["us_per_row"]
    for step in ("field_texts", "encode", "encode_and_leaf_hash", "python_frontier_per_leaf"):
        assert per[step] > 0, step
    # Encoding and hashing cost at least what encoding does: the probes price different work.
    assert per["encode_and_leaf_hash"] > per["leaf_hash"]
    assert floor["encode_hash_tree_us"] == round(
        per["encode_and_leaf_hash"] + per["python_frontier_per_leaf"], 3
    )
    assert "5 % budget 1.50" in ledger_floor.summary(floor, 1.5)


def test_an_empty_ledger_has_no_floor(database_url: str) -> None:
    assert ledger_floor.measure(database_url) == {"rows": 0}
    assert ledger_floor.summary({"rows": 0}, None) == "ledger floor: no rows"


def test_the_budget_is_five_percent_of_a_batch_item_without_signing() -> None:
    ab = {"batch": {"off": {"median_cpu_us_per_item": 10.0, "median_pg_cpu_us_per_item": 12.0}}}

    assert ledger_floor.budget_us(ab) == 0.05 * 22.0
    assert ledger_floor.budget_us(None) is None
    assert ledger_floor.budget_us({"batch": {"off": {"median_cpu_us_per_item": None}}}) is None


def test_a_report_line_names_the_budget_only_when_the_a_b_ran() -> None:
    floor = {
        "rows": 10,
        "us_per_row": {
            "field_texts": 1.0,
            "encode": 1.2,
            "encode_and_leaf_hash": 2.0,
            "leaf_hash": 0.6,
            "python_node_hash": 0.3,
            "python_frontier_per_leaf": 0.4,
        },
        "hashes_only_us": 0.9,
        "encode_hash_tree_us": 2.4,
    }
    ab = {"batch": {"off": {"median_cpu_us_per_item": 10.0, "median_pg_cpu_us_per_item": 10.0}}}

    with_ab = ledger_floor.report_line({"audit_scenario": {"ledger_floor": floor}, "ledger_ab": ab})
    without = ledger_floor.report_line({"audit_scenario": {"ledger_floor": floor}})

    assert "encode + hash + tree 2.4; ContributeBatch's 5 % budget 1.00 µs per item" in with_ab
    assert "budget" not in without
