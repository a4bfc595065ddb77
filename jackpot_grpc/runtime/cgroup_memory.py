"""A process's memory limit from its cgroup (v2 `memory.max`, v1 `memory.limit_in_bytes`).

A service under systemd (`MemoryMax=`) or in a container is killed at its cgroup's limit,
not when the machine runs out: memory percentages (the runbook's 85 % / 95 % thresholds)
are of that limit when there is one, and of the machine's memory only when there is none.
"""

from __future__ import annotations

from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")
# cgroup v1 writes "no limit" as a huge page-aligned number (PAGE_COUNTER_MAX pages).
_V1_UNLIMITED = 1 << 60


def _cgroup_paths(pid: int | str, proc: Path) -> tuple[str | None, str | None]:
    """(v2 path, v1 memory controller path) of the process, from /proc/<pid>/cgroup."""
    v2: str | None = None
    v1: str | None = None
    try:
        text = (proc / str(pid) / "cgroup").read_text()
    except OSError:
        return None, None
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _read_limit(file: Path) -> int | None:
    """The limit in a cgroup file; None when the file is absent or says "no limit"."""
    try:
        raw = file.read_text().strip()
    except OSError:
        return None
    if not raw or raw == "max":
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return None if value <= 0 or value >= _V1_UNLIMITED else value


def _candidates(root: Path, relative: str | None, *names: str) -> list[Path]:
    """The process's own cgroup directory first, then the mount's root (a container sees
    its own cgroup as the root of the mount)."""
    base = root.joinpath(*names)
    dirs = [base / relative.lstrip("/")] if relative and relative != "/" else []
    return [*dirs, base]


def memory_limit(
    pid: int | str = "self", root: Path = CGROUP_ROOT, proc: Path = PROC
) -> int | None:
    """The memory limit (bytes) of the process's cgroup, or None when it has none."""
    v2, v1 = _cgroup_paths(pid, proc)
    for directory in _candidates(root, v2):
        if (directory / "memory.max").is_file():
            return _read_limit(directory / "memory.max")
    for directory in _candidates(root, v1, "memory"):
        if (directory / "memory.limit_in_bytes").is_file():
            return _read_limit(directory / "memory.limit_in_bytes")
    return None


def memory_percent(rss_bytes: int, limit: int | None) -> float:
    """rss as a percent of the limit; of the machine's memory when there is no limit (or
    the limit is above what the machine has)."""
    total = int(psutil.virtual_memory().total)
    bound = min(limit, total) if limit else total
    return 100.0 * rss_bytes / bound if bound else 0.0
