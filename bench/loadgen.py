"""Runs a load (jackpot_grpc.ops.loadtest, where the generator lives) in a separate,
spawned process, so that the client has its own interpreter and event loop (the machine
has 2 cores shared by client, server and PostgreSQL; a client in the orchestrator's
process would also compete with it for the GIL).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import signal
import time
import traceback
from collections.abc import Callable

from jackpot_grpc.ops.loadtest import (
    CallFailed,
    Kind,
    LoadResult,
    LoadSpec,
    latency_summary,
    percentile,
    run_load,
)

__all__ = [
    "CallFailed",
    "Kind",
    "LoadResult",
    "LoadSpec",
    "latency_summary",
    "percentile",
    "run_in_subprocess",
    "run_load",
]


# --- in a separate process -----------------------------------------------------------------


READY = "ready"


def _child(spec: LoadSpec, conn: multiprocessing.connection.Connection) -> None:
    # Ctrl-C goes to the whole process group; the parent decides when this process ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result: LoadResult | str = asyncio.run(run_load(spec, lambda: conn.send(READY)))
    except BaseException:
        result = traceback.format_exc()
    with contextlib.suppress(OSError):  # the parent stopped listening (interrupted)
        conn.send(result)
    conn.close()


def run_in_subprocess(
    spec: LoadSpec,
    *,
    on_start: Callable[[], None] | None = None,
    on_tick: Callable[[], None] | None = None,
    tick: float = 0.5,
    timeout: float | None = None,
) -> LoadResult:
    """Run one load in a spawned process and return its result.

    `on_start` is called when the child is connected and about to send its first call
    (process start-up is not part of the load); `on_tick` every `tick` seconds while the
    load runs (e.g. to sample the server's memory). The child is terminated if this
    returns early for any reason.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(spec, sender), name=f"loadgen-{spec.kind}")
    limit = timeout if timeout is not None else spec.warmup + spec.duration + 60.0
    process.start()
    sender.close()
    finished = False
    try:
        deadline = time.monotonic() + limit
        while True:
            if receiver.poll(tick):
                message = receiver.recv()
                if message == READY:
                    if on_start is not None:
                        on_start()
                    continue
                break
            if on_tick is not None:
                on_tick()
            if not process.is_alive() and not receiver.poll(0):
                raise RuntimeError(f"load generator exited with code {process.exitcode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"load generator did not finish within {limit:.0f}s")
        finished = True
        if isinstance(message, str):
            raise RuntimeError(f"load generator failed:\n{message}")
        if not isinstance(message, LoadResult):
            raise RuntimeError(f"load generator sent {type(message).__name__}")
        return message
    finally:
        receiver.close()
        if not finished:  # interrupted or failed: do not let the load run on
            process.terminate()
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)
