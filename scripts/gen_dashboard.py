"""Generate deploy/grafana/jackpot-dashboard.json with Grafana's own typed builders.

The dashboard shows the runbook's views: pools over time, contributions and wins per minute,
latency percentiles per method, error rate by code, batch sizes, database connections and
the ledger's balance. Heavy queries read the recording rules of
deploy/prometheus/jackpot-recording.yml. Every query is plain PromQL (no Grafana macros),
so tests/prometheus/test_prometheus.py runs each against a real Prometheus and requires data, and
tests/unit/test_dashboard.py requires the committed file to equal this script's output.

Run `make dashboard` after changing a panel; import the JSON in Grafana (Dashboards → New →
Import) and pick the Prometheus data source for the `datasource` variable.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    ValueMap,
    ValueMappingResult,
)

OUTPUT = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "jackpot-dashboard.json"
UID = "jackpot-service"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'job="jackpot"'
# The edge's HAProxy exporter (docs/DEPLOY.md, "The edge"), scraped as a job of its own.
EDGE_JOB = 'job="jackpot-edge"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # or "stat"
    width: int = 12


ROWS: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    (
        "Pools",
        (
            PanelSpec(
                "Pool amounts",
                "Each pool's current amount, read from the database at every scrape"
                " (minor units: cents).",
                "none",
                (
                    Query(
                        f"max by (group) (jackpot_pool_current_amount_minor_units{{{JOB}}})",
                        "{{group}}",
                    ),
                ),
                width=24,
            ),
            PanelSpec(
                "Contributions per minute",
                "Contributions applied per minute, by pool (5-minute rate).",
                "none",
                (
                    Query(
                        "sum by (group) (job_group:jackpot_contributions:rate5m) * 60", "{{group}}"
                    ),
                ),
            ),
            PanelSpec(
                "Wins per minute",
                "Wins paid per minute, by pool (5-minute rate).",
                "none",
                (Query("sum by (group) (job_group:jackpot_wins:rate5m) * 60", "{{group}}"),),
            ),
        ),
    ),
    (
        "gRPC",
        (
            PanelSpec(
                "Latency percentiles by method",
                "Server handling time of each jackpot RPC: p50, p95 and p99 over 5 minutes"
                " (runbook targets: Contribute < 100 ms, Win < 150 ms, GetPools < 50 ms).",
                "s",
                tuple(
                    Query(
                        f"job_grpc_method:grpc_server_handling_seconds:{p}_5m",
                        f"{{{{grpc_method}}}} {p}",
                    )
                    for p in ("p50", "p95", "p99")
                ),
                width=24,
            ),
            PanelSpec(
                "Calls per second by method",
                "Completed RPCs per second, whatever their status.",
                "reqps",
                (Query("job_grpc_method:grpc_server_handled:rate5m", "{{grpc_method}}"),),
            ),
            PanelSpec(
                "Errors per second by code",
                "RPCs that did not end OK, by gRPC status code. Server-side faults"
                " (UNAVAILABLE, INTERNAL, ...) are the alerting ones; INVALID_ARGUMENT and"
                " FAILED_PRECONDITION are callers' mistakes.",
                "reqps",
                (
                    Query(
                        "sum by (grpc_code)"
                        ' (job_grpc_code:grpc_server_handled:rate5m{grpc_code!="OK"})',
                        "{{grpc_code}}",
                    ),
                ),
            ),
            PanelSpec(
                "Server error ratio",
                "Share of RPCs ending in a server-side error (alerts: > 0.5 % warning,"
                " > 1 % critical).",
                "percentunit",
                (Query("job:grpc_server_errors:ratio_rate5m", "server errors"),),
            ),
            PanelSpec(
                "Overload: calls refused and dropped",
                "Calls admission refused (RESOURCE_EXHAUSTED / UNAVAILABLE, by reason) and"
                " calls gRPC core received but the server never took (dropped past"
                " GRPC_MAX_PENDING_CALLS), per second.",
                "reqps",
                (
                    Query(
                        f"sum by (reason) (rate(jackpot_refusals_total{{{JOB}}}[5m]))",
                        "{{reason}}",
                    ),
                    Query(
                        f"sum(rate(jackpot_grpc_core_calls_started_total{{{JOB}}}[5m]))"
                        f" - sum(rate(jackpot_grpc_calls_taken_total{{{JOB}}}[5m]))",
                        "dropped by gRPC core",
                    ),
                ),
            ),
            PanelSpec(
                "Contributions per group commit",
                "Batch sizes of the contribution batcher: mean and p95 over 5 minutes.",
                "none",
                (
                    Query("job:jackpot_batch_size:mean5m", "mean"),
                    Query("histogram_quantile(0.95, job:jackpot_batch_size_bucket:rate5m)", "p95"),
                ),
            ),
        ),
    ),
    (
        "Database and ledger",
        (
            PanelSpec(
                "Database connections",
                "The service's connection pool: connections lent out, open, the configured"
                " maximum and callers queued for one.",
                "none",
                (
                    Query(f"sum(jackpot_db_pool_in_use{{{JOB}}})", "in use"),
                    Query(f"sum(jackpot_db_pool_size{{{JOB}}})", "open"),
                    Query(f"sum(jackpot_db_pool_max_size{{{JOB}}})", "max"),
                    Query(f"sum(jackpot_db_pool_requests_waiting{{{JOB}}})", "waiting"),
                ),
            ),
            PanelSpec(
                "Database probe latency",
                "The health probe's last SELECT 1, per instance (alerts: > 50 ms, > 100 ms).",
                "s",
                (Query(f"jackpot_database_ping_seconds{{{JOB}}}", "{{instance}}"),),
            ),
            PanelSpec(
                "Ledger balanced",
                "1 when every pool equals seed funding + contributions - wins (the"
                " background audit); 0 pages.",
                "none",
                (Query(f"min(jackpot_books_balanced{{{JOB}}})", "balanced"),),
                kind="stat",
                width=6,
            ),
            PanelSpec(
                "Ledger discrepancy by pool",
                "current_amount minus what the ledger says, per pool (minor units; 0 is right).",
                "none",
                (
                    Query(
                        f"max by (group) (jackpot_ledger_discrepancy_minor_units{{{JOB}}})",
                        "{{group}}",
                    ),
                ),
                width=18,
            ),
        ),
    ),
    (
        "Edge",
        (
            PanelSpec(
                "Edge refusals",
                "Calls the edge refused per second, by kind: a client over its admitted rate"
                " or calls in flight (gRPC RESOURCE_EXHAUSTED, REST 429), and queue timeouts"
                " with every server at its calls in flight (empty without the edge).",
                "reqps",
                (
                    Query(
                        "sum by (proxy) (rate(haproxy_backend_http_requests_total"
                        f'{{{EDGE_JOB},proxy=~"edge_refused_.*"}}[5m]))',
                        "{{proxy}}",
                    ),
                    Query(
                        "sum(rate(haproxy_backend_http_responses_total"
                        f'{{{EDGE_JOB},proxy="jackpot_grpc",code="5xx"}}[5m]))',
                        "queue timeouts and server errors",
                    ),
                ),
            ),
            PanelSpec(
                "Edge: servers up",
                "Servers behind the edge passing their health check (NOT_SERVING ones are"
                " drained).",
                "none",
                (
                    Query(
                        f'min(haproxy_backend_active_servers{{{EDGE_JOB},proxy="jackpot_grpc"}})',
                        "serving",
                    ),
                ),
            ),
        ),
    ),
)

# Panels reading the edge's series; tests/edge checks them against HAProxy's exporter, as
# the service's own Prometheus test has no edge in front.
EDGE_METRIC_PREFIX = "haproxy_"


def _targets(spec: PanelSpec) -> list[prometheus.Dataquery]:
    return [
        prometheus.Dataquery().expr(q.expr).legend_format(q.legend).ref_id(chr(ord("A") + i))
        for i, q in enumerate(spec.queries)
    ]


def _panel(spec: PanelSpec) -> timeseries.Panel | stat.Panel:
    panel: timeseries.Panel | stat.Panel
    if spec.kind == "stat":
        balanced = ValueMap(
            options={
                "0": ValueMappingResult(text="UNBALANCED", color="red"),
                "1": ValueMappingResult(text="balanced", color="green"),
            }
        )
        panel = stat.Panel().mappings([balanced])
    else:
        panel = timeseries.Panel()
    panel = (
        panel.title(spec.title)
        .description(spec.description)
        .unit(spec.unit)
        .datasource(DATASOURCE)
        .height(8)
        .span(spec.width)
    )
    for target in _targets(spec):
        panel = panel.with_target(target)
    return panel


def build() -> dict[str, object]:
    """The dashboard as the JSON object Grafana imports."""
    board = (
        dashboard.Dashboard("Jackpot service")
        .uid(UID)
        .description("The runbook's views of the jackpot service (deploy/grafana).")
        .tags(["jackpot", "grpc"])
        .time("now-6h", "now")
        .refresh("30s")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
        )
    )
    ids = iter(range(1, 1000))  # stable panel ids, so links into a panel survive regeneration
    for title, panels in ROWS:
        board = board.with_row(dashboard.Row(title).id(next(ids)))
        for spec in panels:
            board = board.with_panel(_panel(spec).id(next(ids)))
    encoded = _without_nulls(json.loads(json.dumps(board.build(), cls=JSONEncoder)))
    assert isinstance(encoded, dict)
    return encoded


def _without_nulls(value: object) -> object:
    """The builders emit unset options as null; Grafana wants them absent (its defaults)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def queries(document: dict[str, object]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target in a dashboard document."""
    found: list[tuple[str, str]] = []
    panels = document.get("panels", [])
    assert isinstance(panels, list)
    for panel in panels:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    return found


def main() -> int:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
