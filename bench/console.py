"""The bench's progress lines, timestamped."""

from __future__ import annotations

import time


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)
