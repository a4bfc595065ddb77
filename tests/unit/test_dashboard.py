"""deploy/grafana/jackpot-dashboard.json is what scripts/gen_dashboard.py generates, and it
has the runbook's views. (Its queries run against a real Prometheus in
tests/prometheus/test_prometheus.py.)"""

from __future__ import annotations

import json

from scripts import gen_dashboard


def test_the_committed_dashboard_is_the_generators_output() -> None:
    committed = gen_dashboard.OUTPUT.read_text()
    assert committed == gen_dashboard.render(), "run `make dashboard` and commit the JSON"


def test_the_dashboard_has_the_runbooks_views() -> None:
    document = json.loads(gen_dashboard.OUTPUT.read_text())
    titles = {title for title, _ in gen_dashboard.queries(document)}
    assert titles >= {
        "Pool amounts",
        "Contributions per minute",
        "Wins per minute",
        "Latency percentiles by method",
        "Errors per second by code",
        "Contributions per group commit",
        "Database connections",
        "Ledger balanced",
    }
    panels = [p for p in document["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in document["panels"]}) == len(document["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and panel["description"]
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
