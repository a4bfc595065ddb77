"""Waiting for the stop signal, shared by the server and the gateway processes."""

from __future__ import annotations

import asyncio
import signal


async def wait_for_signal() -> None:
    """Return at the first SIGTERM or SIGINT.

    The handlers stay installed for the life of the loop: a second signal while the
    process drains (an impatient Ctrl-C, or a supervisor and a terminal both signalling)
    is absorbed instead of interrupting the graceful stop with KeyboardInterrupt.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
