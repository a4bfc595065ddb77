"""Host-side facts for diagnostics: the service's processes, resources and recent log errors.

(The database's side is in pgstat; the service's health in health.)
"""

from __future__ import annotations

import gzip
import os
import re
from collections import deque
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import psutil

from jackpot_grpc.runtime.cgroup_memory import memory_limit, memory_percent

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
            limit = memory_limit(proc.pid)
            found.append(
                {
                    "pid": proc.pid,
                    "status": proc.info["status"],
                    "rss_mb": round(memory.rss / 2**20, 1) if memory else None,
                    "limit_mb": round(limit / 2**20) if limit else None,
                    # Of the process's cgroup limit (MemoryMax=), else of the machine's.
                    "memory_percent": round(memory_percent(memory.rss, limit), 1)
                    if memory
                    else None,
                    "started": datetime.fromtimestamp(proc.info["create_time"]),
                    "command": " ".join(cmdline)[:120],
                }
            )
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def host_resources(paths: list[Path]) -> dict[str, Any]:
    memory = psutil.virtual_memory()
    limit = memory_limit()
    resources: dict[str, Any] = {
        "cpu_percent": psutil.cpu_percent(interval=0.2),
        "cpus": psutil.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "memory_percent": memory.percent,
        "memory_available_mb": round(memory.available / 2**20),
        # In a container the limit is the container's, not the machine's.
        "memory_limit_mb": round(limit / 2**20) if limit else None,
    }
    for path in paths:
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        usage = psutil.disk_usage(str(existing))
        resources[f"disk_free_gb ({existing})"] = round(usage.free / 2**30, 2)
    return resources


def log_files(log_file: Path, since: datetime) -> list[Path]:
    """application.log and its rotated copies (logrotate's `.1`, `.2.gz`, `-YYYYMMDD[.gz]`)
    that were written to since `since`, oldest first."""
    if not log_file.parent.is_dir():
        return []
    cutoff = since.timestamp()
    found = [
        p
        for p in log_file.parent.glob(log_file.name + "*")
        if p.is_file() and p.stat().st_mtime >= cutoff
    ]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def _lines(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", errors="replace")
    return path.open(errors="replace")


def recent_log_errors(
    log_file: Path, hours: float = 24.0, keep: int = 5, now: datetime | None = None
) -> dict[str, Any]:
    """ERROR/CRITICAL lines in the last `hours` (local time, as logged) of application.log
    and of the rotated files that reach into that window."""
    since = (now or datetime.now()) - timedelta(hours=hours)
    files = log_files(log_file, since)
    count = 0
    last: deque[str] = deque(maxlen=keep)
    for path in files:
        try:
            with _lines(path) as lines:
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
        except (OSError, EOFError):  # a file rotated away or compressed under us
            continue
    return {
        "file": log_file,
        "present": log_file.is_file(),
        "files_read": len(files),
        "errors": count,
        "last": list(last),
    }
