"""`jackpot serve` as operators run it: what the process does once it serves."""

from __future__ import annotations

import re
from pathlib import Path

from testkit.processes import serving


def test_the_server_freezes_its_start_up_objects_once_it_serves(
    database_url: str, tmp_path: Path
) -> None:
    with serving(database_url, tmp_path):
        text = (tmp_path / "application.log").read_text()
    found = re.search(r"froze (\d+) start-up objects out of garbage collection", text)
    assert found is not None, text[-2000:]
    assert int(found.group(1)) > 10_000  # modules, gRPC, protobuf, the app
