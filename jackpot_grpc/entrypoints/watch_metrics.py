"""WatchPools' figures for /metrics/prometheus (docs/OPERATIONS.md, "Watching the watchers")."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from jackpot_grpc.service.watch_hub import WatchHub


class WatchCollector:
    def __init__(self, hub: WatchHub) -> None:
        self._hub = hub

    def collect(self) -> Iterable[Metric]:
        hub, counters = self._hub, self._hub.counters
        yield GaugeMetricFamily(
            "jackpot_watchers", "WatchPools streams open on this process.", value=hub.watchers
        )
        for name, help_text, value in (
            (
                "updates_sent",
                "Messages (pool updates and hits) written to watchers.",
                counters.updates_sent,
            ),
            (
                "updates_skipped",
                "Pool updates a slow watcher never got (a newer one replaced them).",
                counters.updates_skipped,
            ),
            (
                "watchers_cut",
                "Watchers cut off for falling behind (WATCHER_TOO_SLOW).",
                counters.watchers_cut,
            ),
            (
                "watchers_refused",
                "Watchers refused at a cap (TOO_MANY_WATCHERS).",
                counters.refused,
            ),
            (
                "refreshes",
                "Reads of the pools or new wins after a change (one per process,"
                " never per watcher).",
                counters.refreshes,
            ),
        ):
            yield CounterMetricFamily(f"jackpot_watch_{name}", help_text, value=value)
