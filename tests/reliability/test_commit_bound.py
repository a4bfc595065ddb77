"""A COMMIT that does not return is never acknowledged (JACKPOT_COMMIT_TIMEOUT).

On a PostgreSQL cluster of the test's own: `synchronous_standby_names = 'ghost'` (a
standby that never connects) makes every writing COMMIT wait in SyncRep forever, as a
promoted node that still requires a standby it does not have would. The callers must get
UNAVAILABLE COMMIT_OUTCOME_UNKNOWN within the bound, the process must keep serving once the
setting is lifted, and the same key retried must replay (the commit had landed locally) or
apply exactly once. A server-side cancel of the wait (pg_cancel_backend), which PostgreSQL
answers with a WARNING and a successful COMMIT, must be a failure too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc
from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.adapters import database, migrations
from jackpot_grpc.config import Settings
from jackpot_grpc.domain.errors import CommitOutcomeUnknown
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from jackpot_grpc.history.sampler import MetricsSampler, SamplerConfig
from jackpot_grpc.ledger.note import Signer
from jackpot_grpc.observability.metrics import RequestMetrics
from jackpot_grpc.service.ledger_books import sign_checkpoint
from testkit.calls import error_reason
from testkit.figures import report
from testkit.grpc_health import NOT_SERVING, SERVING, health_status_async
from testkit.ledger_traffic import real_traffic
from testkit.postgres_cluster import CrashablePostgres, cancel_sync_rep_waits
from testkit.scratch import database_conninfo

COMMIT_TIMEOUT = 1.0
MARGIN = 1.5  # the bound, plus a batch queued behind it and a slow machine


@pytest.fixture(scope="module")
def cluster() -> Iterator[CrashablePostgres]:
    pg = CrashablePostgres("commit-bound")
    try:
        yield pg
    finally:
        pg.close()


@pytest.fixture
def frozen_url(cluster: CrashablePostgres) -> Iterator[str]:
    """A migrated database on the private cluster; the freeze is lifted afterwards."""
    name = f"jackpot_commit_{time.monotonic_ns()}"
    with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = database_conninfo(cluster.admin_url, name)
    migrations.upgrade(url)
    try:
        yield url
    finally:
        cluster.set_system("synchronous_standby_names", None)
        with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _request(key: str, wager: int = 1000) -> pb.ContributeRequest:
    return pb.ContributeRequest(game_id="commit-bound", wager_amount=wager, idempotency_key=key)


async def _refused(stub: jackpot_pb2_grpc.JackpotServiceStub, key: str) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Contribute(_request(key), timeout=20)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
    return error_reason(caught.value), time.monotonic() - started


def _rows_with_key(url: str, key: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM contributions WHERE idempotency_key = %s", (key,)
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
async def running(
    settings: Settings, frozen_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[RunningServer]:
    """The server on the private cluster; param: its commit timeout (default COMMIT_TIMEOUT)."""
    commit_timeout = getattr(request, "param", COMMIT_TIMEOUT)
    tuned = dataclasses.replace(
        settings,
        database=dataclasses.replace(
            settings.database, commit_timeout=commit_timeout, pool_min_size=1
        ),
    )
    server = await start_server(tuned, frozen_url, port=0)
    try:
        yield server
    finally:
        await server.stop(grace=1.0)


async def test_a_commit_waiting_for_a_standby_fails_within_the_bound(
    running: RunningServer, cluster: CrashablePostgres, frozen_url: str
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
        first = await stub.Contribute(_request("before-freeze"), timeout=10)
        assert not first.replayed

        assert await health_status_async(channel) == SERVING

        cluster.set_system("synchronous_standby_names", "ghost")
        frozen_at = time.monotonic()
        reason, took = await _refused(stub, "frozen-1")
        assert reason == "COMMIT_OUTCOME_UNKNOWN"
        assert COMMIT_TIMEOUT * 0.9 <= took <= COMMIT_TIMEOUT + MARGIN, took
        # Readiness covers writes: the heartbeat cannot commit either.
        assert await _health_becomes(channel, NOT_SERVING, within=10.0)
        not_serving_after = time.monotonic() - frozen_at
        assert not_serving_after < 10.0

        # The stuck transaction still holds the pool rows' locks (PostgreSQL releases them
        # after the standby's answer): the next writers fail fast too, UNAVAILABLE.
        reason_2, took_2 = await _refused(stub, "frozen-2")
        assert took_2 <= COMMIT_TIMEOUT + 2.0 + MARGIN, took_2  # DB_LOCK_TIMEOUT is 2 s

        cluster.set_system("synchronous_standby_names", None)
        # The process serves again without a restart; each key settles exactly once: the
        # frozen commit had landed locally, so its retry replays it.
        lifted = time.monotonic()
        assert await _health_becomes(channel, SERVING, within=10.0)
        serving_after = time.monotonic() - lifted
        retried = await _retry_until_ok(stub, "frozen-1")
        assert retried.replayed
        fresh = await _retry_until_ok(stub, "after-freeze")
        assert not fresh.replayed
    assert _rows_with_key(frozen_url, "frozen-1") == 1
    assert _rows_with_key(frozen_url, "after-freeze") == 1
    report(
        "commit_bound",
        {
            "commit_timeout_s": COMMIT_TIMEOUT,
            "first_call_answered_s": round(took, 3),
            "next_call": reason_2,
            "next_call_answered_s": round(took_2, 3),
            "not_serving_after_s": round(not_serving_after, 3),
            "serving_after_lift_s": round(serving_after, 3),
        },
    )


async def test_a_win_waiting_for_a_standby_fails_within_the_bound(
    running: RunningServer, cluster: CrashablePostgres, frozen_url: str
) -> None:
    win = pb.WinRequest(
        group=pb.JACKPOT_GROUP_MINOR,
        game_id="commit-bound",
        user_id="00000000-0000-4000-8000-000000000001",
        win_amount=1,
        idempotency_key="win-frozen",
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
        cluster.set_system("synchronous_standby_names", "ghost")
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Win(win, timeout=20)
        took = time.monotonic() - started
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(caught.value) == "COMMIT_OUTCOME_UNKNOWN"
        assert took <= COMMIT_TIMEOUT + MARGIN, took
        cluster.set_system("synchronous_standby_names", None)
        deadline = time.monotonic() + 15
        while True:
            try:
                replay = await stub.Win(win, timeout=10)
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
        assert replay.replayed
    with psycopg.connect(frozen_url) as conn:
        row = conn.execute("SELECT count(*) FROM wins WHERE idempotency_key = 'win-frozen'")
        assert row.fetchone() == (1,)


async def _health_becomes(channel: grpc.aio.Channel, status: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await health_status_async(channel) == status:
            return True
        await asyncio.sleep(0.05)
    return False


async def _retry_until_ok(
    stub: jackpot_pb2_grpc.JackpotServiceStub, key: str, within: float = 15.0
) -> pb.ContributeResponse:
    deadline = time.monotonic() + within
    while True:
        try:
            response: pb.ContributeResponse = await stub.Contribute(_request(key), timeout=10)
            return response
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("running", [0.0], indirect=True)  # no commit bound
async def test_a_cancelled_standby_wait_is_a_failure_not_a_success(
    running: RunningServer, cluster: CrashablePostgres, frozen_url: str
) -> None:
    """pg_cancel_backend on the waiting backend: PostgreSQL answers the COMMIT as done,
    with a WARNING; the caller must not be told OK."""
    # No commit bound here: only the warning decides.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
        await stub.Contribute(_request("warm-up"), timeout=10)
        cluster.set_system("synchronous_standby_names", "ghost")
        call = asyncio.ensure_future(_refused(stub, "cancelled-1"))
        # The contribution's own COMMIT (the service's connections), not a background one.
        cancelled = await asyncio.to_thread(
            cancel_sync_rep_waits, frozen_url, only=database.APPLICATION_NAME
        )
        assert cancelled >= 1
        reason, _ = await asyncio.wait_for(call, 10)
        assert reason == "COMMIT_OUTCOME_UNKNOWN"
        cluster.set_system("synchronous_standby_names", None)
        retried = await _retry_until_ok(stub, "cancelled-1")
        assert retried.replayed
    assert _rows_with_key(frozen_url, "cancelled-1") == 1


async def test_an_idle_server_turns_not_serving_when_writes_cannot_commit(
    settings: Settings, cluster: CrashablePostgres, frozen_url: str
) -> None:
    """No call in flight: the probe's heartbeat write is what sees the freeze."""
    tuned = dataclasses.replace(
        settings,
        health=dataclasses.replace(
            settings.health, probe_interval=0.2, probe_timeout=0.5, failure_threshold=2
        ),
    )
    server = await start_server(tuned, frozen_url, port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            assert await _health_becomes(channel, SERVING, within=5.0)
            cluster.set_system("synchronous_standby_names", "ghost")
            assert await _health_becomes(channel, NOT_SERVING, within=5.0)
            assert "CommitOutcomeUnknown" in (server.probe.last_error or "")
            cluster.set_system("synchronous_standby_names", None)
            assert await _health_becomes(channel, SERVING, within=5.0)
    finally:
        cluster.set_system("synchronous_standby_names", None)
        await server.stop(grace=1.0)


async def test_a_committed_write_turns_readiness_back_before_the_next_probe(
    settings: Settings, cluster: CrashablePostgres, frozen_url: str
) -> None:
    """A batch stuck past JACKPOT_BATCH_AGE_LIMIT turns readiness NOT_SERVING; its commit,
    once the standby requirement is lifted, turns it SERVING at once, although the next
    probe is seconds away."""
    interval = 5.0
    tuned = dataclasses.replace(
        settings,
        health=dataclasses.replace(settings.health, probe_interval=interval, failure_threshold=1),
        batch=dataclasses.replace(settings.batch, age_limit=0.5),
        database=dataclasses.replace(settings.database, commit_timeout=60.0),
    )
    server = await start_server(tuned, frozen_url, port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
            cluster.set_system("synchronous_standby_names", "ghost")
            stuck = asyncio.ensure_future(stub.Contribute(_request("stuck-1"), timeout=60))
            assert await _health_becomes(channel, NOT_SERVING, within=interval + 3)
            assert "in flight" in (server.probe.last_error or "")
            assert server.probe.stuck_batch_seconds is not None
            flipped = server.probe.last_checked
            cluster.set_system("synchronous_standby_names", None)
            lifted = time.monotonic()
            answer = await asyncio.wait_for(stuck, 10)
            assert not answer.replayed
            assert await _health_becomes(channel, SERVING, within=1.5)
            assert time.monotonic() - lifted < 1.5
            assert server.probe.last_checked == flipped  # no probe ran meanwhile
    finally:
        cluster.set_system("synchronous_standby_names", None)
        await server.stop(grace=1.0)
    assert _rows_with_key(frozen_url, "stuck-1") == 1


async def test_no_checkpoint_covers_leaves_whose_standby_wait_was_cancelled(
    cluster: CrashablePostgres, frozen_url: str, tmp_path: Path
) -> None:
    """The signer's leaves commit like any write: a cancelled standby wait means the
    leaves may not survive a failover, so no checkpoint is signed over them."""
    await real_traffic(frozen_url)  # rows that are no leaves yet
    log = tmp_path / "checkpoints"
    signer = Signer.generate("commit-bound")
    cluster.set_system("synchronous_standby_names", "ghost")
    signing = asyncio.ensure_future(asyncio.to_thread(sign_checkpoint, frozen_url, signer, log))
    assert await asyncio.to_thread(cancel_sync_rep_waits, frozen_url) == 1
    with pytest.raises(CommitOutcomeUnknown):
        await asyncio.wait_for(signing, 10)
    assert not log.exists()
    # The leaves are committed locally now: a second turn finds no new row, but they are
    # still not known to be on the standby; its COMMIT waits for the standby like the
    # first (cancelled: unknown again), and nothing is signed.
    signing = asyncio.ensure_future(asyncio.to_thread(sign_checkpoint, frozen_url, signer, log))
    assert await asyncio.to_thread(cancel_sync_rep_waits, frozen_url) == 1
    with pytest.raises(CommitOutcomeUnknown):
        await asyncio.wait_for(signing, 10)
    assert not log.exists()
    cluster.set_system("synchronous_standby_names", None)
    signed = await asyncio.to_thread(sign_checkpoint, frozen_url, signer, log)
    assert signed.checkpoint.size > 3 and log.exists()  # replicated: signed now


async def test_the_server_stops_while_commits_are_frozen(
    settings: Settings,
    cluster: CrashablePostgres,
    frozen_url: str,
    ledger_key: Path,
    tmp_path: Path,
) -> None:
    """SIGTERM during a freeze: the batch thread is freed by its bound, and the checkpoint
    worker whose leaves' COMMIT waits for the standby is ended, so stopping is bounded
    (before: the stop waited for the worker as long as the freeze lasted)."""
    signing = dataclasses.replace(
        settings,
        database=dataclasses.replace(settings.database, commit_timeout=COMMIT_TIMEOUT),
        ledger=dataclasses.replace(
            settings.ledger,
            key_file=ledger_key,
            checkpoint_log=tmp_path / "checkpoints",
            checkpoint_interval=0.3,
        ),
    )
    server = await start_server(signing, frozen_url, port=0)
    stopped = False
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
            await stub.Contribute(_request("before-freeze"), timeout=10)
            cluster.set_system("synchronous_standby_names", "ghost")
            reason, _ = await _refused(stub, "frozen")
            assert reason == "COMMIT_OUTCOME_UNKNOWN"
            await asyncio.sleep(1.0)  # the checkpoint worker's turn: its COMMIT waits too
        started = time.monotonic()
        await asyncio.wait_for(server.stop(grace=1.0), 30)
        stopped = True
        assert time.monotonic() - started < 15.0
    finally:
        cluster.set_system("synchronous_standby_names", None)
        if not stopped:
            await server.stop(grace=1.0)


async def test_metrics_history_writes_are_bounded_while_commits_are_frozen(
    cluster: CrashablePostgres, frozen_url: str
) -> None:
    """The side pool's writes (the metrics sampler's) get the commit bound too: while
    commits wait for a standby that never comes, a flush fails COMMIT_OUTCOME_UNKNOWN
    within its bound (before: its backstop timeout cancelled the COMMIT, which PostgreSQL
    answers as done), keeps its rows, and writes them once when commits are back."""
    config = SamplerConfig(write_timeout=0.5)
    async with AsyncConnectionPool(frozen_url, min_size=1, max_size=2, open=False) as pool:
        await pool.open(wait=True, timeout=10)
        sampler = MetricsSampler(pool, RequestMetrics(), config)
        sampler.take_sample()
        cluster.set_system("synchronous_standby_names", "ghost")
        try:
            started = time.monotonic()
            assert not await asyncio.wait_for(sampler.flush(), 10)
            took = time.monotonic() - started
            assert "CommitOutcomeUnknown" in (sampler.last_error or ""), sampler.last_error
            assert took < 0.5 + MARGIN, took
            assert sampler.buffered_batches == 1  # kept for the next flush
        finally:
            cluster.set_system("synchronous_standby_names", None)
        assert await asyncio.wait_for(sampler.flush(), 10)
    with psycopg.connect(frozen_url) as conn:
        row = conn.execute("SELECT count(*) FROM system_metrics").fetchone()
    assert row == (1,)  # the frozen commit had landed locally: not written twice
