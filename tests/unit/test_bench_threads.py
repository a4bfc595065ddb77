"""The bench's server CPU by thread (bench/scenarios.py): a thread that names itself as
the batch thread does is counted as the batch thread, the main thread as the event loop."""

from __future__ import annotations

import sys
import threading
import time

import psutil
import pytest

from bench.scenarios import THREAD_KINDS, _thread_cpu_seconds
from jackpot_grpc.runtime.thread_names import name_os_thread
from jackpot_grpc.service.batcher import BATCH_THREAD_NAME

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="/proc comm is Linux's")


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_cpu_is_split_between_the_event_loop_the_batch_thread_and_the_rest() -> None:
    me = [psutil.Process()]
    named, go, burnt, done = (threading.Event() for _ in range(4))

    def batch_thread() -> None:
        name_os_thread(BATCH_THREAD_NAME)
        named.set()
        go.wait(10)  # burns only after the first reading
        burn(0.3)
        burnt.set()
        done.wait(10)  # alive while the second reading is taken

    worker = threading.Thread(target=batch_thread)
    worker.start()
    named.wait(10)
    before = _thread_cpu_seconds(me)
    go.set()
    burn(0.2)  # on the main thread: the "event loop"
    assert burnt.wait(30)  # the worker's 0.3 s, on a machine however busy
    after = _thread_cpu_seconds(me)
    done.set()
    worker.join()
    used = {kind: after[kind] - before[kind] for kind in THREAD_KINDS}
    assert used["batch thread"] >= 0.2
    assert used["event loop"] >= 0.15
    assert used["grpc and other threads"] < 0.1
