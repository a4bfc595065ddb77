"""`jackpot run` (what `make run` runs) stops cleanly on Ctrl-C and on SIGTERM.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group, and an impatient
operator presses it twice: the supervisor, the gRPC server and the gateway must all end
with exit code 0 either way, and leave nothing running.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from testkit.database import scratch_database
from testkit.processes import ServiceProcess, http_ok, service_env


@pytest.fixture
def run_env(admin_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    with scratch_database(admin_url, "jackpot_run") as url:
        yield service_env(url, tmp_path / "logs", JACKPOT_DRAIN_DELAY="0.2")


def start_run(env: dict[str, str], tmp_path: Path) -> ServiceProcess:
    """`jackpot run` as the leader of a process group of its own, as a shell runs it."""
    run = ServiceProcess(["run"], env, tmp_path, new_session=True)
    run.launch()
    pools = f"http://127.0.0.1:{env['REST_PORT']}/api/jackpot/pools"
    health = f"http://127.0.0.1:{env['HEALTH_PORT']}/health"
    try:
        run.wait_until(lambda: http_ok(pools) and http_ok(health), 40, "answering", interval=0.1)
    except BaseException:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=10)
        raise
    return run


@pytest.mark.parametrize(
    ("signum", "times"),
    [(signal.SIGINT, 2), (signal.SIGTERM, 1)],
    ids=["ctrl-c-twice-to-the-group", "sigterm-to-the-supervisor"],
)
def test_jackpot_run_stops_cleanly(
    run_env: dict[str, str], tmp_path: Path, signum: signal.Signals, times: int
) -> None:
    run = start_run(run_env, tmp_path)
    children = run.processes()[1:]
    assert len(children) >= 2  # the gRPC server and the gateway
    try:
        for _ in range(times):
            if signum == signal.SIGINT:
                os.killpg(run.pid, signum)  # what the terminal does on Ctrl-C
            else:
                run.signal(signum)  # what a process manager does
            time.sleep(0.02)
        code = run.wait(timeout=60)
    finally:
        if run.alive():
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=10)
    output = run.output()
    assert code == 0, output
    assert "REST gateway stopped" in output, output
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == [], f"children of jackpot run outlived it: {alive}"
