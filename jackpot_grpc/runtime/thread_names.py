"""The service's own threads named for the operating system too (Linux), so that `top -H`,
py-spy and the bench's CPU per thread tell the batch thread from the event loop and from
grpc's threads. Python's `Thread(name=...)` stays inside Python; the kernel's name of a
thread is its /proc comm (15 bytes), which a thread may set for itself."""

from __future__ import annotations

import threading

COMM_LIMIT = 15  # the kernel keeps at most 15 bytes of a thread's name


def name_os_thread(name: str) -> None:
    """Give the calling thread `name` (cut to 15 bytes) in the operating system; nothing
    where /proc has no such file (not Linux)."""
    path = f"/proc/self/task/{threading.get_native_id()}/comm"
    try:
        with open(path, "w", encoding="ascii", errors="replace") as comm:
            comm.write(name[:COMM_LIMIT])
    except OSError:
        pass
