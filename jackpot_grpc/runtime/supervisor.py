"""Runs child processes side by side and stops them together.

`jackpot run` (server + gateway) and `jackpot serve --workers N` use it. SIGTERM or
SIGINT is forwarded to every child, once; when one child dies, the others are stopped
too, so a half-running service never looks healthy.

Children run in their own process group, so a terminal's Ctrl-C (sent to the whole
foreground group) reaches only the supervisor, which forwards it: each child gets exactly
one stop signal and drains, instead of two signals racing its shutdown.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from types import FrameType

log = logging.getLogger(__name__)


def supervise(
    commands: Sequence[Sequence[str]],
    env: Mapping[str, str],
    stop_timeout: float = 30.0,
    overrides: Sequence[Mapping[str, str]] = (),
) -> int:
    """Start every command; return 0 only if all of them exit 0 after a stop signal.
    `overrides[i]`, if given, is added to the environment of command i."""
    extra = list(overrides) + [{}] * (len(commands) - len(overrides))
    children = [
        subprocess.Popen(list(cmd), env={**env, **more}, process_group=0)
        for cmd, more in zip(commands, extra, strict=True)
    ]
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            log.warning("already stopping; waiting for the children to drain")
            return
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stopping and all(c.poll() is None for c in children):
            time.sleep(0.2)
        if not stopping:
            dead = [c for c in children if c.poll() is not None]
            log.error(
                "child %s exited with %s; stopping the rest", dead[0].args, dead[0].returncode
            )
            forward(signal.SIGTERM, None)
        deadline = time.monotonic() + stop_timeout
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("child %s did not stop in time; killing it", child.args)
                child.kill()
                child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # Children shut down gracefully on the forwarded signal and exit 0 on their own.
    return 0 if stopping and all(c.returncode == 0 for c in children) else 1
