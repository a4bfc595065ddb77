"""A failover is detected, and what it lost is named by leaf index.

- The comparison on real PostgreSQL: a database copied before the last writes (what an
  asynchronous standby holds when it is promoted) lacks the newest checkpoint's last
  leaves; they are reported by index, and the copy taken after them holds every leaf and
  gives the checkpoint's root.
- End to end: the server's DATABASE_URL is a multi-host DSN, a private cluster first and
  the system server second (`target_session_attrs=read-write`). The private one is
  crashed: every connection moves to the other cluster (another system identifier), the
  change is logged at ERROR, counted, exported, shown in /health, the signed checkpoint's
  leaves are found missing there by index, and checkpoint signing stops.
- The issue's asynchronous failover: a standby copied with pg_basebackup misses what the
  primary acknowledged afterwards; the primary is crashed and the copy promoted (same
  system identifier, timeline 2). The new timeline is detected, the lost leaves are named
  by index, and the lost keys re-sent apply again while the kept ones replay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import grpc
import psycopg
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jackpot_grpc.adapters import ledger_store, migrations
from jackpot_grpc.adapters.database_liveness import ClusterIdentity
from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import start_server
from jackpot_grpc.jobs.failover_watch import FailoverWatch
from jackpot_grpc.ledger.checkpoint import Checkpoint, split_log
from jackpot_grpc.ledger.note import Signer
from jackpot_grpc.service.ledger_books import (
    CheckpointSigner,
    HistoryChanged,
    LedgerBooksError,
    sign_checkpoint,
)
from testkit.database import unique_name
from testkit.freezable_proxy import FreezableProxy
from testkit.ledger_traffic import real_traffic
from testkit.postgres_cluster import CrashablePostgres
from testkit.scratch import create_database, drop_database


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"not true within {within} s"
        await asyncio.sleep(0.1)


async def test_a_copy_from_before_the_last_writes_lacks_their_leaves_by_index(
    admin_url: str, database_url: str, tmp_path: Path
) -> None:
    signer = Signer.generate("failover-test")
    log = tmp_path / "checkpoints"
    await real_traffic(database_url)
    early = sign_checkpoint(database_url, signer, log).checkpoint
    standby = unique_name("jackpot_standby")
    source = conninfo_to_dict(database_url)["dbname"]
    create_database(admin_url, standby, template=str(source))  # the standby stops here
    try:
        await real_traffic(database_url)  # acknowledged, never received by the standby
        late = sign_checkpoint(database_url, signer, log).checkpoint
        assert late.size > early.size

        standby_url = make_conninfo(database_url, dbname=standby)
        lost = ledger_store.compare_with_checkpoint(standby_url, late.size, late.root_hash)
        assert lost.missing == [(early.size, late.size - 1)]
        assert lost.missing_count == late.size - early.size
        assert lost.present == early.size
        assert lost.root_matches is None

        kept = ledger_store.compare_with_checkpoint(standby_url, early.size, early.root_hash)
        assert kept.missing == [] and kept.root_matches is True
        whole = ledger_store.compare_with_checkpoint(database_url, late.size, late.root_hash)
        assert whole.missing == [] and whole.root_matches is True
        # Leaves at the right indices with other contents: the root says so.
        assert (
            ledger_store.compare_with_checkpoint(
                standby_url, early.size, late.root_hash
            ).root_matches
            is False
        )
    finally:
        drop_database(admin_url, standby)


@pytest.fixture
def private_cluster() -> Iterator[CrashablePostgres]:
    pg = CrashablePostgres("failover-watch")
    try:
        yield pg
    finally:
        pg.close()


def _failover_pair_url(primary: CrashablePostgres, standby_dir: Path, dbname: str) -> str:
    """A migrated database `dbname` on `primary`, and the multi-host URL that reaches
    whichever of the primary and a standby at `standby_dir` accepts writes (the server's
    and the signer's kind of URL)."""
    with psycopg.connect(primary.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {dbname}")
    migrations.upgrade(make_conninfo(primary.admin_url, dbname=dbname))
    return make_conninfo(
        host=f"{primary.data_dir},{standby_dir}",
        user="postgres",
        dbname=dbname,
        target_session_attrs="read-write",
    )


def _signing(settings: Settings, ledger_key: Path, log: Path) -> Settings:
    """`settings` with a checkpoint signer every 0.2 s (key `ledger_key`, log `log`) and a
    health probe that sees a reconnection within 0.2 s."""
    return dataclasses.replace(
        settings,
        ledger=dataclasses.replace(
            settings.ledger, key_file=ledger_key, checkpoint_log=log, checkpoint_interval=0.2
        ),
        health=dataclasses.replace(settings.health, probe_interval=0.2, failure_threshold=1),
    )


async def test_a_move_to_another_cluster_is_detected_and_its_losses_named(
    private_cluster: CrashablePostgres,
    admin_url: str,
    settings: Settings,
    ledger_key: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = unique_name("jackpot_failover")
    first = conninfo_to_dict(private_cluster.admin_url)
    second = conninfo_to_dict(admin_url)
    with psycopg.connect(private_cluster.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    migrations.upgrade(make_conninfo(private_cluster.admin_url, dbname=name))
    create_database(admin_url, name)
    try:
        migrations.upgrade(make_conninfo(admin_url, dbname=name))
        url = make_conninfo(
            host=f"{first['host']},{second.get('host', '127.0.0.1')}",
            port=f"{first.get('port', 5432)},{second.get('port', 5432)}",
            user="postgres",
            dbname=name,
            target_session_attrs="read-write",
        )
        signing = _signing(settings, ledger_key, tmp_path / "checkpoints")
        running = await start_server(signing, url, port=0)
        health = f"http://127.0.0.1:{running.health_port}"
        watch, checkpointer = running.failover, running.checkpointer
        assert watch is not None and checkpointer is not None
        try:
            assert watch.first is not None
            before = watch.first
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
                for i in range(5):
                    await stub.Contribute(
                        pb.ContributeRequest(
                            game_id="failover", wager_amount=1000 + i, idempotency_key=f"k-{i}"
                        ),
                        timeout=10,
                    )

            def signed_five() -> bool:
                newest = checkpointer.newest()
                return newest is not None and newest.size >= 5

            await eventually(signed_five, within=15)
            newest = checkpointer.newest()
            assert newest is not None
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{health}/health") as reply:
                    body = await reply.json()
                assert body["checks"]["failover"]["timeline_changes"] == 0
                assert body["checks"]["failover"]["system_identifier"] == str(
                    before.system_identifier
                )

                with caplog.at_level(logging.ERROR):
                    await asyncio.to_thread(private_cluster.crash)
                    await eventually(lambda: watch.comparison is not None and watch.changes > 0, 20)
                assert watch.current is not None
                assert watch.current.system_identifier != before.system_identifier
                assert watch.changes == 1
                found = watch.comparison
                assert found is not None
                # The other cluster's database has only its migration's leaves (the seed
                # fundings): every leaf the five contributions added is missing.
                assert found.present < newest.size - 5 + 1
                lost = (found.present, newest.size - 1)
                assert found.missing == [lost]
                assert checkpointer.halted is not None
                errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
                assert any("database failover detected" in e for e in errors), errors
                assert any(f"leaf indices {lost[0]}-{lost[1]}" in e for e in errors), errors

                async with http.get(f"{health}/health") as reply:
                    assert reply.status == 503
                    body = await reply.json()
                failover = body["checks"]["failover"]
                assert failover["timeline_changes"] == 1
                assert failover["last_change"]["from"]["system_identifier"] == str(
                    before.system_identifier
                )
                assert failover["checkpoint_comparison"]["leaves_missing"] == found.missing_count
                assert failover["checkpoint_comparison"]["missing_indices"] == [list(lost)]
                async with http.get(
                    f"{health}/metrics/prometheus", headers={"Accept": "text/plain"}
                ) as reply:
                    metrics = await reply.text()
                assert "jackpot_database_timeline_changes_total 1.0" in metrics
                assert f"jackpot_checkpoint_leaves_missing {float(found.missing_count)}" in metrics
        finally:
            await running.stop(grace=1.0)
    finally:
        drop_database(admin_url, name)


async def _contribute(stub: jackpot_pb2_grpc.JackpotServiceStub, key: str) -> pb.ContributeResponse:
    deadline = time.monotonic() + 20
    while True:
        try:
            response: pb.ContributeResponse = await stub.Contribute(
                pb.ContributeRequest(game_id="failover", wager_amount=1000, idempotency_key=key),
                timeout=10,
            )
            return response
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            assert time.monotonic() < deadline, exc
            await asyncio.sleep(0.2)


async def test_an_asynchronous_standby_promoted_loses_named_leaves(
    settings: Settings, ledger_key: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's asynchronous run on real PostgreSQL: a standby copied from the primary
    (pg_basebackup) misses what the primary acknowledged afterwards; the primary dies, the
    copy is promoted (same system identifier, timeline 2). The server follows it through
    its multi-host DSN, reports the new timeline, and names the lost leaves by index; the
    lost keys, re-sent, apply again (`replayed: false`), the kept ones replay."""
    primary = CrashablePostgres("tl-primary")
    standby: CrashablePostgres | None = None
    standby_dir = primary.data_dir.parent / f"tl-standby-{unique_name('x')[-8:]}"
    try:
        url = _failover_pair_url(primary, standby_dir, "jackpot_tl")
        signing = _signing(settings, ledger_key, tmp_path / "checkpoints")
        running = await start_server(signing, url, port=0)
        watch, checkpointer = running.failover, running.checkpointer
        assert watch is not None and checkpointer is not None and watch.first is not None
        before = watch.first
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = jackpot_pb2_grpc.JackpotServiceStub(channel)

                async def signed(keys: list[str]) -> int:
                    for key in keys:
                        assert not (await _contribute(stub, key)).replayed
                    with psycopg.connect(
                        make_conninfo(primary.admin_url, dbname="jackpot_tl")
                    ) as c:
                        row = c.execute("SELECT count(*) FROM contributions").fetchone()
                    assert row is not None
                    rows = int(row[0])

                    def covered() -> bool:
                        newest = checkpointer.newest()
                        return newest is not None and newest.size >= rows + 3  # + seeds

                    await eventually(covered, within=15)
                    newest = checkpointer.newest()
                    assert newest is not None
                    return newest.size

                kept = [f"kept-{i}" for i in range(5)]
                lost = [f"lost-{i}" for i in range(5)]
                size_kept = await signed(kept)
                standby = await asyncio.to_thread(primary.standby_copy, standby_dir)
                size_lost = await signed(lost)  # acknowledged, checkpointed, never copied
                assert size_lost == size_kept + 5

                with caplog.at_level(logging.ERROR):
                    await asyncio.to_thread(primary.crash)
                    await asyncio.to_thread(standby.restart)  # promoted: timeline 2
                    await eventually(lambda: watch.comparison is not None and watch.changes > 0, 30)
                assert watch.current is not None
                assert watch.current.system_identifier == before.system_identifier
                assert (before.timeline, watch.current.timeline) == (1, 2)
                assert watch.comparison is not None
                assert watch.comparison.missing == [(size_kept, size_lost - 1)]
                assert checkpointer.halted is not None
                errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
                assert any("a new timeline (a standby was promoted)" in e for e in errors)
                assert any(f"leaf indices {size_kept}-{size_lost - 1}" in e for e in errors)

                # The runbook's re-check: every acknowledged key re-sent.
                assert all([(await _contribute(stub, k)).replayed for k in kept])
                assert not any([(await _contribute(stub, k)).replayed for k in lost])
        finally:
            await running.stop(grace=1.0)
    finally:
        if standby is not None:
            standby.close()
        primary.close()


async def test_the_comparison_connects_within_the_connect_timeout_and_stop_waits_for_it(
    settings: Settings, silent_port: int
) -> None:
    """A database host that never answers: before, compare_with_checkpoint's connection had
    no connect_timeout, so its thread hung for good and stop() cancelled the task while
    the thread stayed blocked. Now the comparison fails within DB_CONNECT_TIMEOUT and stop
    returns after it ended."""
    bounded = dataclasses.replace(
        settings, database=dataclasses.replace(settings.database, connect_timeout=1.0)
    )
    checkpoint = Checkpoint("failover-watch", 3, b"\0" * 32, ())
    watch = FailoverWatch(
        f"postgresql://postgres@127.0.0.1:{silent_port}/jackpot",
        checkpoint=lambda: checkpoint,
        settings=bounded,
    )
    started = time.monotonic()
    watch.connected(ClusterIdentity(system_identifier=1, timeline=1))  # starts a comparison
    await asyncio.sleep(0.1)
    await watch.stop()
    took = time.monotonic() - started
    assert watch.comparison_error is not None  # the thread came back with the failure
    assert "timeout" in watch.comparison_error.lower(), watch.comparison_error
    assert 0.9 <= took < 5.0, took


def _head(url: str) -> int:
    with psycopg.connect(url) as conn:
        return ledger_store.head(conn).size


async def test_a_signer_never_extends_its_tree_over_another_history_of_one_cluster(
    admin_url: str, database_url: str, tmp_path: Path
) -> None:
    """A signer holding a tree in memory, pointed at a database whose history forked
    below that tree's size (a copy taken before the last leaves, then written past that
    size) on the same cluster and timeline: the leaf below the new ones is not the one
    its tree has, and it refuses, signing nothing over the fork."""
    signer = CheckpointSigner(
        Signer.generate("fork-test"), tmp_path / "checkpoints", keep_connection=True
    )
    await real_traffic(database_url)
    fork = unique_name("jackpot_fork")
    source = conninfo_to_dict(database_url)["dbname"]
    create_database(admin_url, fork, template=str(source))  # the fork leaves here
    try:
        await real_traffic(database_url)
        signed = signer.sign(database_url)
        assert signed is not None
        fork_url = make_conninfo(database_url, dbname=fork)
        while _head(fork_url) <= signed.checkpoint.size:
            await real_traffic(fork_url)  # the fork's own leaves, past the signed size
        with pytest.raises(HistoryChanged, match=f"leaf {signed.checkpoint.size - 1} "):
            signer.sign(fork_url)
        # The next turn rebuilds the tree from the fork: the log's checkpoint is not there.
        with pytest.raises(LedgerBooksError, match="no longer matches the checkpoint"):
            signer.sign(fork_url)
        assert len(list(split_log((tmp_path / "checkpoints").read_text()))) == 1
    finally:
        signer.close()
        drop_database(admin_url, fork)


async def test_a_signer_refuses_a_new_timeline_before_the_failover_watch_reacts(
    tmp_path: Path,
) -> None:
    """The signing worker reconnects on its own: after the primary dies and a standby
    copied before the last leaves is promoted (timeline 2) and written past the signed
    size, the same multi-host URL reaches it; the signer sees another timeline and refuses
    (the identity is checked first: the forked leaf below would refuse it too)."""
    primary = CrashablePostgres("fork-primary")
    standby: CrashablePostgres | None = None
    signer: CheckpointSigner | None = None
    standby_dir = primary.data_dir.parent / f"fork-standby-{unique_name('x')[-8:]}"
    log = tmp_path / "checkpoints"
    try:
        url = _failover_pair_url(primary, standby_dir, "jackpot_fork")
        # As the server's signer: its connection kept across turns (the primary's dies).
        signer = CheckpointSigner(Signer.generate("fork-test"), log, keep_connection=True)
        await real_traffic(url)
        standby = await asyncio.to_thread(primary.standby_copy, standby_dir)
        await real_traffic(url)  # never copied
        signed = signer.sign(url)
        assert signed is not None
        await asyncio.to_thread(primary.crash)
        await asyncio.to_thread(standby.restart)  # promoted: timeline 2
        while _head(url) <= signed.checkpoint.size:
            await real_traffic(url)
        with pytest.raises(HistoryChanged, match=r"timeline 1 -> system identifier \d+ timeline 2"):
            signer.sign(url)
        assert len(list(split_log(log.read_text()))) == 1
    finally:
        if signer is not None:
            signer.close()
        if standby is not None:
            standby.close()
        primary.close()


async def test_a_signer_goes_on_after_a_promotion_that_lost_nothing(tmp_path: Path) -> None:
    """A standby copied after the last checkpoint, promoted (timeline 2): the signer sees
    the new timeline and drops its tree once (HistoryChanged); the next turn rebuilds it
    from the new primary, finds the log's last checkpoint there, and signs again — no
    restart. A signer that kept refusing (as before) would never sign the new leaves."""
    primary = CrashablePostgres("promote-primary")
    standby: CrashablePostgres | None = None
    signer: CheckpointSigner | None = None
    standby_dir = primary.data_dir.parent / f"promote-standby-{unique_name('x')[-8:]}"
    log = tmp_path / "checkpoints"
    try:
        url = _failover_pair_url(primary, standby_dir, "jackpot_promote")
        # As the server's signer: its connection kept across turns (the primary's dies).
        signer = CheckpointSigner(Signer.generate("promote-test"), log, keep_connection=True)
        await real_traffic(url)
        signed = signer.sign(url)
        assert signed is not None
        standby = await asyncio.to_thread(primary.standby_copy, standby_dir)  # has it all
        await asyncio.to_thread(primary.crash)
        await asyncio.to_thread(standby.restart)  # promoted: timeline 2
        await real_traffic(url)
        with pytest.raises(HistoryChanged, match="timeline 2"):
            signer.sign(url)
        again = signer.sign(url)
        assert again is not None and again.checkpoint.size > signed.checkpoint.size
        assert len(list(split_log(log.read_text()))) == 2
    finally:
        if signer is not None:
            signer.close()
        if standby is not None:
            standby.close()
        primary.close()


async def test_the_signer_keeps_its_connection_and_replaces_a_dead_one(
    database_url: str, tmp_path: Path
) -> None:
    """The server's signer signs every turn on one connection (a new one each turn cost
    PostgreSQL about 3 ms); when that connection dies between turns (its backend ended,
    as a restart or failover ends it) the next turn connects anew and signs, without a
    failed turn."""
    signer = CheckpointSigner(
        Signer.generate("kept-test"), tmp_path / "checkpoints", keep_connection=True
    )
    try:
        await real_traffic(database_url)
        assert signer.sign(database_url) is not None
        first = signer.backend_pid
        await real_traffic(database_url)
        assert signer.sign(database_url) is not None
        assert first is not None and signer.backend_pid == first
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        await real_traffic(database_url)
        assert signer.sign(database_url) is not None
        second = signer.backend_pid
        assert second is not None and second != first
        assert len(list(split_log((tmp_path / "checkpoints").read_text()))) == 3
    finally:
        signer.close()


async def test_a_kept_signer_connection_to_a_host_that_stopped_answering_costs_a_connect_timeout(
    database_url: str, tmp_path: Path
) -> None:
    """A host that stops answering (a partition, a frozen machine) leaves the kept
    connection open: its liveness check is bounded by the URL's connect timeout, so the
    next turn moves on to the URL's next host (here the same server, directly) instead of
    waiting for TCP to give up."""
    direct = conninfo_to_dict(database_url)
    host, port = str(direct.get("host") or "127.0.0.1"), int(direct.get("port") or 5432)
    proxy = FreezableProxy(host, port)
    url = make_conninfo(
        database_url,
        host=f"127.0.0.1,{host}",
        port=f"{proxy.port},{port}",
        connect_timeout="1",
        target_session_attrs="read-write",
    )
    signer = CheckpointSigner(
        Signer.generate("frozen-test"), tmp_path / "checkpoints", keep_connection=True
    )
    try:
        await real_traffic(database_url)
        assert signer.sign(url) is not None  # through the proxy, the URL's first host
        through_proxy = signer.backend_pid
        proxy.freeze()
        await real_traffic(database_url)
        started = time.monotonic()
        assert signer.sign(url) is not None
        took = time.monotonic() - started
        assert signer.backend_pid not in (None, through_proxy)
        assert took < 10, took  # a liveness check (1 s) and a connect attempt (1 s)
    finally:
        signer.close()
        proxy.close()
