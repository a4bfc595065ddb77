"""The reliability suite: stress, crashes, floods, fuzzing, replicas, commits frozen waiting
for a standby, failovers. Every test in it is slow, so the marker is set here, once for the
suite (`pytest -m "not slow"` leaves the whole directory out, a new module included); no
other suite is slow, so a slow test belongs here."""

from __future__ import annotations

from pathlib import Path

import pytest

SUITE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SUITE in item.path.parents:
            item.add_marker(pytest.mark.slow)
