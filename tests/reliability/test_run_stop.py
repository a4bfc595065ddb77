"""`jackpot run` (what `make run` runs) stops cleanly on Ctrl-C and on SIGTERM.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group, and an impatient
operator presses it twice: the supervisor, the gRPC server and the gateway must all end
with exit code 0 either way, and leave nothing running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from jackpot_grpc.config import PROJECT_ROOT
from tests.conftest import create_database, drop_database, unique_name
from tests.reliability.support import jackpot_executable, service_env

pytestmark = pytest.mark.slow


@pytest.fixture
def run_env(admin_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    name = unique_name("jackpot_run")
    url = create_database(admin_url, name)
    try:
        yield service_env(url, tmp_path / "logs", JACKPOT_DRAIN_DELAY="0.2")
    finally:
        drop_database(admin_url, name)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def start_run(env: dict[str, str], tmp_path: Path) -> subprocess.Popen[bytes]:
    """`jackpot run` as the leader of a process group of its own, as a shell runs it."""
    with open(tmp_path / "run.out", "wb") as output:
        proc = subprocess.Popen(
            [*jackpot_executable(), "run"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )
    pools = f"http://127.0.0.1:{env['REST_PORT']}/api/jackpot/pools"
    health = f"http://127.0.0.1:{env['HEALTH_PORT']}/health"
    deadline = time.monotonic() + 40
    while not (answers(pools) and answers(health)):
        assert proc.poll() is None, (tmp_path / "run.out").read_text()
        assert time.monotonic() < deadline, (tmp_path / "run.out").read_text()
        time.sleep(0.1)
    return proc


@pytest.mark.parametrize(
    ("signum", "times"),
    [(signal.SIGINT, 2), (signal.SIGTERM, 1)],
    ids=["ctrl-c-twice-to-the-group", "sigterm-to-the-supervisor"],
)
def test_jackpot_run_stops_cleanly(
    run_env: dict[str, str], tmp_path: Path, signum: signal.Signals, times: int
) -> None:
    proc = start_run(run_env, tmp_path)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 2  # the gRPC server and the gateway
    try:
        for _ in range(times):
            if signum == signal.SIGINT:
                os.killpg(proc.pid, signum)  # what the terminal does on Ctrl-C
            else:
                proc.send_signal(signum)  # what a process manager does
            time.sleep(0.02)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = (tmp_path / "run.out").read_text()
    assert code == 0, output
    assert "REST gateway stopped" in output, output
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == [], f"children of jackpot run outlived it: {alive}"
