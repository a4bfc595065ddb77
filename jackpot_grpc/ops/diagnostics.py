"""Host-side facts for diagnostics: the service's processes, resources and recent log errors.

(The database's side is in pgstat; the service's health in health.)
"""

from __future__ import annotations

import os
import re
from collections import deque
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

_LOG_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?:,\d+)? (\w+) ")
ERROR_LEVELS = frozenset({"ERROR", "CRITICAL"})
SERVICE_COMMANDS = frozenset({"serve", "gateway", "run"})


def jackpot_processes() -> list[dict[str, Any]]:
    """`ps aux | grep jackpot`, without the grep: processes running `jackpot serve|gateway|run`."""
    found: list[dict[str, Any]] = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "cmdline", "memory_info", "create_time", "status"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if proc.pid == me or not any("jackpot" in part for part in cmdline):
                continue
            if not SERVICE_COMMANDS.intersection(cmdline):
                continue
            memory = proc.info["memory_info"]
            found.append(
                {
                    "pid": proc.pid,
                    "status": proc.info["status"],
                    "rss_mb": round(memory.rss / 2**20, 1) if memory else None,
                    "started": datetime.fromtimestamp(proc.info["create_time"]),
                    "command": " ".join(cmdline)[:120],
                }
            )
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def host_resources(paths: list[Path]) -> dict[str, Any]:
    memory = psutil.virtual_memory()
    resources: dict[str, Any] = {
        "cpu_percent": psutil.cpu_percent(interval=0.2),
        "cpus": psutil.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "memory_percent": memory.percent,
        "memory_available_mb": round(memory.available / 2**20),
    }
    for path in paths:
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        usage = psutil.disk_usage(str(existing))
        resources[f"disk_free_gb ({existing})"] = round(usage.free / 2**30, 2)
    return resources


def recent_log_errors(
    log_file: Path, hours: float = 24.0, keep: int = 5, now: datetime | None = None
) -> dict[str, Any]:
    """ERROR/CRITICAL lines of application.log in the last `hours` (local time, as logged)."""
    if not log_file.is_file():
        return {"file": log_file, "present": False, "errors": 0, "last": []}
    since = (now or datetime.now()) - timedelta(hours=hours)
    count = 0
    last: deque[str] = deque(maxlen=keep)
    with log_file.open(errors="replace") as lines:
        for line in lines:
            match = _LOG_LINE.match(line)
            if not match or match.group(2) not in ERROR_LEVELS:
                continue
            try:
                when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
            except ValueError:
                continue
            if when >= since:
                count += 1
                last.append(line.rstrip()[:300])
    return {"file": log_file, "present": True, "errors": count, "last": list(last)}
