"""`jackpot <command>` as a child process on free local ports: its environment, its start
(and readiness), signals, stop, memory, and its output for failure messages."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import psutil

from testkit.grpc_health import SERVING, health_status
from testkit.paths import PROJECT_ROOT
from testkit.ports import free_port

# The service's own settings are never inherited from the developer's shell (a TLS
# certificate or a pool size there would change what is being tested).
SERVICE_ENV = ("DATABASE_URL", "GRPC_", "HEALTH_", "REST_", "JACKPOT_", "DB_POOL_", "OTEL_")


def jackpot_executable() -> list[str]:
    """The installed console script next to this interpreter, else `python -m`."""
    script = Path(sys.executable).parent / "jackpot"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "jackpot_grpc.cli"]


def clean_env() -> dict[str, str]:
    """This process's environment without any of the service's own settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_ENV)}


def local_service_env(database_url: str, log_dir: Path) -> dict[str, str]:
    """The settings that place a service: its database, free local ports, its log directory."""
    return {
        "DATABASE_URL": database_url,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(free_port()),
        "HEALTH_HOST": "127.0.0.1",
        "HEALTH_PORT": str(free_port()),
        "REST_HOST": "127.0.0.1",
        "REST_PORT": str(free_port()),
        "JACKPOT_LOG_DIR": str(log_dir),
    }


def service_env(database_url: str, log_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a `jackpot` service child under test: free local ports, logs in
    `log_dir`, the test admin token, a fast health probe, no telemetry, and none of the
    developer's own service settings."""
    return {
        **clean_env(),
        **local_service_env(database_url, log_dir),
        # No clients: the service runs open on loopback, so every call here is let in
        # (tests/e2e/test_identity*.py cover the closed service).
        "JACKPOT_HEALTH_INTERVAL": "0.2",
        "OTEL_SDK_DISABLED": "true",
        **overrides,
    }


def http_ok(url: str, timeout: float = 1.0, token: str | None = None) -> bool:
    """Whether `url` answers 200 right now (to a bearer `token`, if given)."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class ServiceProcess:
    """`jackpot <args>` as a child process, started and stopped by its owner.

    Each start writes its output to `<log_dir>/<name>-<n>.out`. With `new_session` the
    child leads a process group of its own, so a Ctrl-C in the terminal reaches only us.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        log_dir: Path,
        *,
        name: str | None = None,
        new_session: bool = False,
    ) -> None:
        self.args = list(args)
        self.env = dict(env)
        self.log_dir = log_dir
        self.name = name or self.args[0]
        self.new_session = new_session
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.killed = False  # stop() had to SIGKILL it

    @property
    def grpc_port(self) -> int:
        return int(self.env["GRPC_PORT"])

    @property
    def health_port(self) -> int:
        return int(self.env["HEALTH_PORT"])

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def launch(self) -> None:
        """Start the child without waiting for it to be ready."""
        assert self.proc is None or self.proc.poll() is not None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self._output_path(self.starts).open("wb") as output:
            self.proc = subprocess.Popen(
                [*jackpot_executable(), *self.args],
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
                start_new_session=self.new_session,
            )

    def start(self, timeout: float = 30.0) -> float:
        """Launch and wait until grpc health says SERVING; the seconds it took."""
        started = time.monotonic()
        self.launch()
        self.wait_serving(timeout)
        return time.monotonic() - started

    def wait_serving(self, timeout: float = 30.0) -> None:
        self.wait_until(
            lambda: health_status(self.target, timeout=0.5) == SERVING, timeout, "SERVING"
        )

    def wait_until(
        self, ready: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
    ) -> None:
        """Poll `ready` until it holds; RuntimeError if the child exits or time runs out
        first (the message's first line says which, the rest is the child's output)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                problem = f"exited with code {self.returncode}"
            elif ready():
                return
            elif time.monotonic() > deadline:
                problem = f"not {what} within {timeout:g} s"
            else:
                time.sleep(interval)
                continue
            raise RuntimeError(f"jackpot {self.name} {problem}\n{self.log()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait for the drain, SIGKILL only if it hangs; the exit code (None if
        never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def processes(self) -> list[psutil.Process]:
        """This process and its children (`serve --workers N` forks N servers)."""
        root = psutil.Process(self.pid)
        return [root, *root.children(recursive=True)]

    def rss(self) -> int:
        """Resident memory of the process and its children, in bytes."""
        total = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                total += int(proc.memory_info().rss)
        return total

    def output(self) -> str:
        """Everything the latest start printed."""
        try:
            return self._output_path(self.starts).read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def log(self, tail: int = 60) -> str:
        """The last `tail` lines of every start's output, oldest start first."""
        lines: list[str] = []
        for n in range(1, self.starts + 1):
            path = self._output_path(n)
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-tail:]
                lines += [f"--- {path.name}", *text]
        return "\n".join(lines)

    def _output_path(self, start: int) -> Path:
        return self.log_dir / f"{self.name}-{start}.out"


def serve_process(database_url: str, log_dir: Path, **env: str) -> ServiceProcess:
    """`jackpot serve` under test (see service_env), not started yet."""
    return ServiceProcess(["serve"], service_env(database_url, log_dir, **env), log_dir)


@contextlib.contextmanager
def serving(database_url: str, log_dir: Path, **env: str) -> Iterator[ServiceProcess]:
    """`jackpot serve`, SERVING inside the block, stopped after it."""
    process = serve_process(database_url, log_dir, **env)
    try:
        process.start()
        yield process
    finally:
        process.stop()


def start_gateway(serve: ServiceProcess, log_dir: Path, timeout: float = 20.0) -> ServiceProcess:
    """`jackpot gateway` in front of `serve`, answering /api/jackpot/pools."""
    env = {
        **serve.env,
        "REST_PORT": str(free_port()),
        "JACKPOT_GRPC_TARGET": serve.target,
        "JACKPOT_METRICS_URL": f"http://127.0.0.1:{serve.health_port}/metrics",
    }
    gateway = ServiceProcess(["gateway"], env, log_dir)
    gateway.launch()
    pools = f"{base_url(gateway)}/api/jackpot/pools"
    try:
        gateway.wait_until(lambda: http_ok(pools), timeout, "answering", interval=0.1)
    except BaseException:
        gateway.stop()
        raise
    return gateway


def base_url(gateway: ServiceProcess) -> str:
    return f"http://127.0.0.1:{gateway.env['REST_PORT']}"
