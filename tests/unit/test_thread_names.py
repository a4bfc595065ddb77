"""A thread names itself for the operating system (runtime/thread_names.py): the kernel's
name of that thread, and only that thread, changes."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from jackpot_grpc.runtime.thread_names import COMM_LIMIT, name_os_thread

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="/proc comm is Linux's")


def comm(native_id: int) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().strip()


def test_a_thread_gets_its_name_cut_to_the_kernels_limit() -> None:
    seen: dict[str, str] = {}

    def run() -> None:
        name_os_thread("jackpot-batch-and-more")
        seen["comm"] = comm(threading.get_native_id())

    before = comm(threading.get_native_id())
    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert seen["comm"] == "jackpot-batch-and-more"[:COMM_LIMIT]
    assert comm(threading.get_native_id()) == before  # the caller's own name is untouched
