"""Every call or connection the service turned away on purpose, by layer and reason.

Overload and abuse must be visible: a refusal made before a handler ran (admission's
bounds, an HTTP connection cap, a compressed body) would otherwise leave no trace in the
request metrics. Exposed as the Prometheus counter `jackpot_refusals_total{layer,reason}`
and as `refusals` in the /metrics JSON.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class Refusals:
    """Counts on the event loop; no lock (aiohttp and grpc.aio handlers run there)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._counter = Counter(
            "jackpot_refusals",
            "Calls and connections refused on purpose, by layer and reason.",
            ("layer", "reason"),
            registry=self.registry,
        )
        self._counts: dict[tuple[str, str], int] = {}

    def declare(self, layer: str, reasons: tuple[str, ...]) -> None:
        """Export these at 0 before the first refusal: a series that appears only when
        something goes wrong leaves rate() and alerts nothing to read until then."""
        for reason in reasons:
            self._counter.labels(layer, reason)

    def count(self, layer: str, reason: str) -> None:
        key = (layer, reason)
        self._counts[key] = self._counts.get(key, 0) + 1
        self._counter.labels(layer, reason).inc()

    def total(self, layer: str | None = None) -> int:
        return sum(n for (where, _), n in self._counts.items() if layer in (None, where))

    def summary(self) -> dict[str, dict[str, int]]:
        """{layer: {reason: count}}, for the /metrics JSON."""
        out: dict[str, dict[str, int]] = {}
        for (layer, reason), n in sorted(self._counts.items()):
            out.setdefault(layer, {})[reason] = n
        return out
