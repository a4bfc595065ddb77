"""Load sizes from the environment, latency percentiles, and the figures a test reports."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jackpot_grpc.ops.loadtest import percentile


def scale() -> float:
    """JACKPOT_STRESS_SCALE multiplies every load size (default 1: fits ~2.5 min on 2 cores)."""
    raw = os.environ.get("JACKPOT_STRESS_SCALE", "").strip()
    return float(raw) if raw else 1.0


def scaled(default: int, minimum: int = 1) -> int:
    return max(minimum, round(default * scale()))


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p99, max and mean of latencies given in seconds, in milliseconds."""
    if not seconds:
        return {}

    def ms(value: float | None) -> float:
        return round((value or 0.0) * 1000, 1)

    return {
        "p50": ms(percentile(seconds, 50)),
        "p99": ms(percentile(seconds, 99)),
        "max": ms(max(seconds)),
        "mean": ms(statistics.fmean(seconds)),
    }


def report(name: str, figures: dict[str, Any]) -> None:
    """Print the figures (pytest -s or -rP shows them); also write them as JSON when
    JACKPOT_RELIABILITY_REPORT_DIR is set, for docs/RELIABILITY.md."""
    text = json.dumps(figures, indent=2, sort_keys=True, default=str)
    print(f"\n[reliability] {name}\n{text}")
    target = os.environ.get("JACKPOT_RELIABILITY_REPORT_DIR", "").strip()
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        (Path(target) / f"{name}.json").write_text(text + "\n")
