"""What every reliability test shares: sizes, call records, ledger checks, a server process.

Nothing here asserts on its own except `check_contributions` and `check_books`, which hold
the promise under test: every acknowledged key is in the ledger exactly once, every answer
for one key is the same answer, and every pool balances against its ledger.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import PROJECT_ROOT
from jackpot_grpc.entrypoints.health import JACKPOT_SERVICE

GROUPS = ("minor", "major", "mega")
ADMIN_TOKEN = "test-admin-token"
ADMIN_METADATA = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Never acceptable from this service, whatever the input or the fault.
FORBIDDEN_CODES = frozenset({"UNKNOWN", "INTERNAL"})
# A client that talks to a restarting server wants to notice it is back quickly.
FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)


# --- sizes -------------------------------------------------------------------------------


def scale() -> float:
    """JACKPOT_STRESS_SCALE multiplies every load size (default 1: fits ~2.5 min on 2 cores)."""
    raw = os.environ.get("JACKPOT_STRESS_SCALE", "").strip()
    return float(raw) if raw else 1.0


def scaled(default: int, minimum: int = 1) -> int:
    return max(minimum, round(default * scale()))


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def report(name: str, figures: dict[str, Any]) -> None:
    """Print the figures (pytest -s or -rP shows them); also write them as JSON when
    JACKPOT_RELIABILITY_REPORT_DIR is set, for docs/RELIABILITY.md."""
    text = json.dumps(figures, indent=2, sort_keys=True, default=str)
    print(f"\n[reliability] {name}\n{text}")
    target = os.environ.get("JACKPOT_RELIABILITY_REPORT_DIR", "").strip()
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        (Path(target) / f"{name}.json").write_text(text + "\n")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_ms(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(percentile(values, 0.50) * 1000, 1),
        "p99": round(percentile(values, 0.99) * 1000, 1),
        "max": round(max(values) * 1000, 1),
        "mean": round(statistics.fmean(values) * 1000, 1),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- calls -------------------------------------------------------------------------------


@dataclass
class Call:
    """One attempt of one Contribute call, as the caller saw it."""

    key: str | None
    wager: int
    started: float
    ended: float
    code: str
    response: pb.ContributeResponse | None = None
    details: str = ""

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    @property
    def latency(self) -> float:
        return self.ended - self.started


async def contribute_once(
    stub: jackpot_pb2_grpc.JackpotServiceStub,
    key: str | None,
    wager: int,
    *,
    game: str = "reliability",
    deadline_s: float = 30.0,
) -> Call:
    started = time.monotonic()
    request = pb.ContributeRequest(game_id=game, wager_amount=wager, idempotency_key=key or "")
    try:
        response = await stub.Contribute(request, timeout=deadline_s)
    except grpc.aio.AioRpcError as exc:
        return Call(key, wager, started, time.monotonic(), exc.code().name, None, exc.details())
    return Call(key, wager, started, time.monotonic(), "OK", response)


def amounts(response: pb.ContributeResponse) -> tuple[int, int, int]:
    by_group = {c.group: c.amount for c in response.contributions}
    return (
        by_group.get(pb.JACKPOT_GROUP_MINOR, 0),
        by_group.get(pb.JACKPOT_GROUP_MAJOR, 0),
        by_group.get(pb.JACKPOT_GROUP_MEGA, 0),
    )


def answer(response: pb.ContributeResponse) -> bytes:
    """The first answer for a key: everything but the `replayed` flag."""
    copy = pb.ContributeResponse()
    copy.CopyFrom(response)
    copy.replayed = False
    return copy.SerializeToString(deterministic=True)


# --- the ledger --------------------------------------------------------------------------


@dataclass
class LedgerRow:
    id: int
    key: str | None
    wager: int
    amounts: tuple[int, int, int]


def ledger_rows(url: str) -> list[LedgerRow]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT id, idempotency_key, wager_amount, minor_amount, major_amount, mega_amount
               FROM contributions ORDER BY id"""
        ).fetchall()
    return [LedgerRow(r[0], r[1], r[2], (r[3], r[4], r[5])) for r in rows]


@dataclass
class ContributionCheck:
    """What the ledger and the callers' answers say, once reconciled."""

    ledger_rows: int
    keyed_rows: int
    keyless_rows: int
    acknowledged_keys: int
    acknowledged_keyless: int
    answers: int
    replayed_answers: int
    in_doubt_keys: int = 0
    in_doubt_committed: int = 0
    problems: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if k != "problems"}


def check_contributions(
    url: str,
    calls: Iterable[Call],
    *,
    extra_answers: Iterable[tuple[str | None, pb.ContributeResponse]] = (),
    all_keys_acknowledged: bool = True,
    allow_unacknowledged_keyless: bool = False,
    faults: bool = False,
) -> ContributionCheck:
    """Reconcile every answer callers got with the contributions ledger.

    - every acknowledged key is in the ledger exactly once, with the amounts it was told;
    - every answer for one key is the same answer (same contribution_id, amounts, pools);
    - at most one answer per key is not a replay (exactly one when nothing failed);
    - the ledger holds no key nobody sent, and no more keyless rows than were acknowledged
      (unless keyless calls may have committed without an answer);
    - the acknowledged amounts per group sum to the ledger's sums.
    `extra_answers` are (key, response) pairs from ContributeBatch items.
    """
    rows = ledger_rows(url)
    problems: list[str] = []
    by_key: dict[str, list[LedgerRow]] = defaultdict(list)
    for row in rows:
        if row.key is not None:
            by_key[row.key].append(row)
    by_id = {row.id: row for row in rows}

    answers: dict[str | None, list[pb.ContributeResponse]] = defaultdict(list)
    attempted: set[str] = set()
    failed_keys: set[str] = set()
    for call in calls:
        if call.key is not None:
            attempted.add(call.key)
        if call.ok:
            assert call.response is not None
            answers[call.key].append(call.response)
        elif call.key is not None:
            failed_keys.add(call.key)
    for key, response in extra_answers:
        if key is not None:
            attempted.add(key)
        answers[key].append(response)

    keyless = answers.pop(None, [])
    for key in sorted(attempted):
        got = answers.get(key, [])
        in_ledger = by_key.get(key, [])
        if len(in_ledger) > 1:
            problems.append(f"key {key!r} is in the ledger {len(in_ledger)} times")
        if not got:
            if all_keys_acknowledged:
                problems.append(f"key {key!r} was never acknowledged")
            continue
        if len(in_ledger) != 1:
            problems.append(f"acknowledged key {key!r} is in the ledger {len(in_ledger)} times")
            continue
        row = in_ledger[0]
        if len({answer(r) for r in got}) != 1:
            problems.append(f"key {key!r} got {len({answer(r) for r in got})} different answers")
        first = got[0]
        if first.contribution_id != row.id or amounts(first) != row.amounts:
            problems.append(
                f"key {key!r} was told id {first.contribution_id} {amounts(first)},"
                f" the ledger has id {row.id} {row.amounts}"
            )
        fresh = sum(1 for r in got if not r.replayed)
        if fresh > 1 or (fresh == 0 and not faults):
            problems.append(f"key {key!r} got {fresh} first (not replayed) answers")
    unknown = sorted(set(by_key) - attempted)
    if unknown:
        problems.append(f"{len(unknown)} ledger keys nobody sent, e.g. {unknown[:3]}")

    keyless_rows = sum(1 for row in rows if row.key is None)
    keyless_ids = [r.contribution_id for r in keyless]
    if len(set(keyless_ids)) != len(keyless_ids):
        problems.append("two keyless calls were told the same contribution_id")
    for response in keyless:
        found = by_id.get(response.contribution_id)
        if found is None or found.key is not None or found.amounts != amounts(response):
            problems.append(f"keyless answer id {response.contribution_id} is not in the ledger")
    if keyless_rows < len(keyless) or (
        keyless_rows > len(keyless) and not allow_unacknowledged_keyless
    ):
        problems.append(f"{keyless_rows} keyless ledger rows for {len(keyless)} keyless answers")

    acknowledged = {k: v for k, v in answers.items() if v}
    if not allow_unacknowledged_keyless and all_keys_acknowledged:
        if len(rows) != len(acknowledged) + len(keyless):
            problems.append(
                f"{len(rows)} ledger rows for {len(acknowledged)} acknowledged keys"
                f" + {len(keyless)} keyless calls"
            )
        told = [amounts(v[0]) for v in acknowledged.values()] + [amounts(r) for r in keyless]
        told_sums = tuple(sum(a[i] for a in told) for i in range(3))
        ledger_sums = tuple(sum(r.amounts[i] for r in rows) for i in range(3))
        if told_sums != ledger_sums:
            problems.append(f"acknowledged sums {told_sums} != ledger sums {ledger_sums}")

    in_doubt = failed_keys & set(acknowledged)
    committed_before = {
        k for k in in_doubt if all(r.replayed for r in acknowledged[k])
    }  # the failed attempt had in fact committed; the retry replayed it
    return ContributionCheck(
        ledger_rows=len(rows),
        keyed_rows=len(rows) - keyless_rows,
        keyless_rows=keyless_rows,
        acknowledged_keys=len(acknowledged),
        acknowledged_keyless=len(keyless),
        answers=sum(len(v) for v in acknowledged.values()) + len(keyless),
        replayed_answers=sum(1 for v in acknowledged.values() for r in v if r.replayed),
        in_doubt_keys=len(in_doubt),
        in_doubt_committed=len(committed_before),
        problems=problems,
    )


def check_books(url: str) -> list[str]:
    """An audit independent of the service's own query: every pool against its ledgers,
    every win against its seed top-up. Returns the problems found (none when balanced)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return books_problems(conn)


def books_problems(conn: psycopg.Connection[Any]) -> list[str]:
    """check_books on an open autocommit connection (one consistent snapshot)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        pools = conn.execute(
            """SELECT j.jackpot_group, j.current_amount, j.total_contributions, j.total_wins,
                      j.total_seed_funding,
                      (SELECT coalesce(sum(s.amount), 0) FROM seed_fundings s
                        WHERE s.jackpot_group = j.jackpot_group),
                      (SELECT coalesce(sum(CASE j.jackpot_group
                                WHEN 'minor' THEN c.minor_amount
                                WHEN 'major' THEN c.major_amount
                                ELSE c.mega_amount END), 0) FROM contributions c),
                      (SELECT coalesce(sum(w.amount), 0) FROM wins w
                        WHERE w.jackpot_group = j.jackpot_group),
                      j.win_count,
                      (SELECT count(*) FROM wins w WHERE w.jackpot_group = j.jackpot_group)
               FROM jackpots j ORDER BY j.lock_order"""
        ).fetchall()
        wins = conn.execute(
            """SELECT count(*) FROM wins w
               WHERE w.pool_after <> w.pool_before - w.amount + w.seed_top_up
                  OR w.seed_top_up <> coalesce(
                         (SELECT sum(s.amount) FROM seed_fundings s WHERE s.win_id = w.id), 0)"""
        ).fetchone()
    problems = []
    for group, current, t_contrib, t_wins, t_seed, seed, contrib, won, n_wins, wins_n in pools:
        if current != seed + contrib - won:
            problems.append(f"{group}: current {current} != {seed} + {contrib} - {won}")
        if (t_contrib, t_wins, t_seed) != (contrib, won, seed):
            problems.append(
                f"{group}: totals {(t_contrib, t_wins, t_seed)} != ledger {(contrib, won, seed)}"
            )
        if n_wins != wins_n:
            problems.append(f"{group}: win_count {n_wins} != {wins_n} win rows")
    assert wins is not None
    if wins[0]:
        problems.append(f"{wins[0]} win rows whose pool_after or seed top-up does not add up")
    return problems


def table_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            """SELECT (SELECT count(*) FROM contributions), (SELECT count(*) FROM wins),
                      (SELECT count(*) FROM seed_fundings), (SELECT count(*) FROM config_audit)"""
        ).fetchone()
    assert row is not None
    return dict(zip(("contributions", "wins", "seed_fundings", "config_audit"), row, strict=True))


# --- a `jackpot serve` process -----------------------------------------------------------


def jackpot_executable() -> list[str]:
    """The installed console script next to this interpreter, else `python -m`."""
    script = Path(sys.executable).parent / "jackpot"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "jackpot_grpc.cli"]


# The service's own settings are never inherited from the developer's shell (a TLS
# certificate or a pool size there would change what is being tested).
SERVICE_ENV = ("DATABASE_URL", "GRPC_", "HEALTH_", "REST_", "JACKPOT_", "DB_POOL_", "OTEL_")


def service_env(database_url: str, log_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a `jackpot` service child: free local ports, logs in `log_dir`,
    and none of the developer's own service settings."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_ENV)}
    return {
        **inherited,
        "DATABASE_URL": database_url,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(free_port()),
        "HEALTH_HOST": "127.0.0.1",
        "HEALTH_PORT": str(free_port()),
        "REST_HOST": "127.0.0.1",
        "REST_PORT": str(free_port()),
        "JACKPOT_LOG_DIR": str(log_dir),
        # No clients: the service runs open on loopback, so every call here is let in
        # (tests/e2e/test_identity*.py cover the closed service).
        "JACKPOT_HEALTH_INTERVAL": "0.2",
        "OTEL_SDK_DISABLED": "true",
        **overrides,
    }


class ServeProcess:
    """`jackpot serve` as a child process on free ports, started and stopped by the test."""

    def __init__(self, database_url: str, log_dir: Path, **env: str) -> None:
        self.database_url = database_url
        self.log_dir = log_dir
        self.env = service_env(database_url, log_dir, **env)
        self.grpc_port = int(self.env["GRPC_PORT"])
        self.health_port = int(self.env["HEALTH_PORT"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 30.0) -> float:
        """Start the process and wait until grpc health says SERVING; the seconds it took."""
        assert self.proc is None or self.proc.poll() is not None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        output = open(self.log_dir / f"serve-{self.starts}.out", "wb")  # noqa: SIM115
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [*jackpot_executable(), "serve"],
            env=self.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )
        output.close()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise RuntimeError(f"jackpot serve exited with {code}:\n{self.log()}")
            if health_status(self.target, timeout=0.5) == SERVING:
                return time.monotonic() - started
            time.sleep(0.05)
        raise RuntimeError(f"jackpot serve not SERVING within {timeout} s:\n{self.log()}")

    def signal(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not go; the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log(self, tail: int = 60) -> str:
        lines: list[str] = []
        for path in sorted(self.log_dir.glob("serve-*.out")):
            lines += [f"--- {path.name}", *path.read_text(errors="replace").splitlines()[-tail:]]
        return "\n".join(lines)


@contextlib.contextmanager
def serving(database_url: str, log_dir: Path, **env: str) -> Iterator[ServeProcess]:
    process = ServeProcess(database_url, log_dir, **env)
    try:
        process.start()
        yield process
    finally:
        process.stop()


def health_status(target: str, timeout: float = 1.0, service: str = JACKPOT_SERVICE) -> int | None:
    """grpc.health.v1 status of `service` at `target`, None if it does not answer."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return None
    status: int = reply.status
    return status


async def health_status_async(
    channel: grpc.aio.Channel, deadline_s: float = 0.5, service: str = JACKPOT_SERVICE
) -> int | None:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=deadline_s
        )
    except grpc.aio.AioRpcError:
        return None
    status: int = reply.status
    return status


def cli_audit(database_url: str) -> tuple[int, dict[str, Any]]:
    """`jackpot audit --json` against the database: (exit code, its report)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_ENV)}
    env = {**inherited, "DATABASE_URL": database_url, "OTEL_SDK_DISABLED": "true"}
    done = subprocess.run(
        [*jackpot_executable(), "audit", "--json"],
        env=env,
        capture_output=True,
        timeout=60,
        cwd=PROJECT_ROOT,
        check=False,
    )
    try:
        parsed: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        parsed = {"stdout": done.stdout.decode(errors="replace"), "stderr": done.stderr.decode()}
    return done.returncode, parsed


def status_codes(codes: Iterable[str]) -> dict[str, int]:
    """How many times each status code was seen, by name."""
    counts: dict[str, int] = defaultdict(int)
    for code in codes:
        counts[code] += 1
    return dict(sorted(counts.items()))
