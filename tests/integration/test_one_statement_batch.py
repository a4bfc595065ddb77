"""A contribution batch in one statement on the batch thread's connection: taken when the
pools are as this connection's last batch left them and none of the batch's keys exists;
otherwise the guard writes nothing and the batch goes the two flights (BatchConnection's
counters say which way each batch went). Real PostgreSQL, a real second writer."""

from __future__ import annotations

import dataclasses
import threading

import psycopg

from jackpot_grpc.adapters.batch_connection import BatchConnection
from jackpot_grpc.config import Settings
from jackpot_grpc.domain.errors import DomainError
from jackpot_grpc.domain.model import ContributeCommand, ContributionResult, Group
from jackpot_grpc.service.jackpot import BatchPlanner
from testkit.random_refs import random_game_id, random_key


def command(wager: int, key: str | None = None) -> ContributeCommand:
    game = random_game_id() if key is None else f"game-{key}"
    return ContributeCommand(game_id=game, wager_amount=wager, idempotency_key=key, client="c")


def apply(writer: BatchConnection, commands: list[ContributeCommand]) -> list[ContributionResult]:
    """One batch as the batcher's thread applies it."""
    planner = BatchPlanner(commands)
    results = planner.outcome(writer.contribute(planner.keys, planner)).results
    assert not any(isinstance(r, DomainError) for r in results), results
    return [r for r in results if isinstance(r, ContributionResult)]


def leaf_indexes(database_url: str) -> list[int]:
    with psycopg.connect(database_url) as conn:
        return [r[0] for r in conn.execute("SELECT leaf_index FROM contributions ORDER BY id")]


def minor_pool(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT current_amount FROM jackpots WHERE jackpot_group = 'minor'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_batch_on_known_pools_with_new_keys_is_one_statement(
    settings: Settings, database_url: str
) -> None:
    writer = BatchConnection(settings, database_url)
    try:
        apply(writer, [command(1000)])  # nothing known yet: the two flights
        (second, third) = apply(writer, [command(2000, random_key()), command(400)])
    finally:
        writer.close()
    assert (writer.one_statement, writer.two_flights) == (1, {"pools not known": 1})
    # The same shares and receipts the two flights give: 5 + 10 + 2 on minor's 10000.
    assert second.shares.pools_after[Group.MINOR] == 10015
    assert third.shares.pools_after[Group.MINOR] == 10017 == minor_pool(database_url)
    first_leaf = leaf_indexes(database_url)[0]
    assert [second.leaf_index, third.leaf_index] == [first_leaf + 1, first_leaf + 2]


def test_a_pool_moved_by_another_writer_sends_the_batch_the_two_flights(
    settings: Settings, database_url: str
) -> None:
    writer, other = BatchConnection(settings, database_url), BatchConnection(settings, database_url)
    try:
        apply(writer, [command(1000)])  # minor 10005, as `writer` now knows it
        apply(other, [command(2000)])  # another server's batch: minor 10015
        (result,) = apply(writer, [command(400)])  # planned on 10005 first: refused
    finally:
        writer.close()
        other.close()
    assert writer.one_statement == 0
    assert writer.two_flights == {"pools not known": 1, "pools moved": 1}
    assert result.shares.pools_after[Group.MINOR] == 10017 == minor_pool(database_url)
    leaves = leaf_indexes(database_url)  # the refused statement gave its index back
    assert leaves == list(range(leaves[0], leaves[0] + 3))


def test_a_key_already_written_sends_the_batch_the_two_flights_and_replays(
    settings: Settings, database_url: str
) -> None:
    key = random_key()
    writer = BatchConnection(settings, database_url)
    try:
        (first,) = apply(writer, [command(1000, key)])
        (again, fresh) = apply(writer, [command(1000, key), command(2000)])
    finally:
        writer.close()
    assert writer.two_flights == {"pools not known": 1, "key exists": 1}
    assert writer.one_statement == 0
    assert again.replayed and again.contribution_id == first.contribution_id
    assert again.leaf_index == first.leaf_index
    assert fresh.shares.pools_after[Group.MINOR] == 10015 == minor_pool(database_url)


def with_timeouts(settings: Settings, *, commit: float, lock: float) -> Settings:
    database = dataclasses.replace(settings.database, commit_timeout=commit, lock_timeout=lock)
    return dataclasses.replace(settings, database=database)


def test_a_reconnected_writer_plans_against_the_database_not_its_last_batch(
    settings: Settings, database_url: str
) -> None:
    """A new connection may reach another database (a failover, a restore) whose pools
    stand at the same versions with other amounts: the first batch on it takes the two
    flights, so its shares and `*_after` figures are the database's."""
    writer = BatchConnection(settings, database_url)
    try:
        apply(writer, [command(1000)])  # minor 10005, version known to `writer`
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            # Another history at the same version: minor holds 7777 more.
            admin.execute(
                "UPDATE jackpots SET current_amount = current_amount + 7777"
                " WHERE jackpot_group = 'minor'"
            )
        (result,) = apply(writer, [command(400)])
    finally:
        writer.close()
    assert writer.one_statement == 0
    assert writer.two_flights == {"pools not known": 2}
    assert result.shares.pools_after[Group.MINOR] == 17784 == minor_pool(database_url)


def test_a_pool_lock_held_elsewhere_sends_the_batch_the_two_flights(
    settings: Settings, database_url: str
) -> None:
    """The one statement runs inside its commit's bound, so it takes the pool locks
    NOWAIT: another writer holding them sends the batch the two flights, which wait for
    the locks outside the bound (a wait there is never taken for an unknown commit)."""
    writer = BatchConnection(with_timeouts(settings, commit=0.0, lock=2.0), database_url)
    holder = psycopg.connect(database_url)
    try:
        apply(writer, [command(1000)])  # pools known: the next batch is one statement
        holder.execute("SELECT 1 FROM jackpots FOR UPDATE")
        release = threading.Timer(1.5, holder.rollback)
        release.start()
        (result,) = apply(writer, [command(400)])
        release.join()
    finally:
        holder.close()
        writer.close()
    assert writer.one_statement == 0
    assert writer.two_flights == {"pools not known": 1, "pools busy": 1}
    assert result.shares.pools_after[Group.MINOR] == 10007 == minor_pool(database_url)


def test_without_a_lock_timeout_shorter_than_the_commit_bound_the_batch_takes_two_flights(
    settings: Settings, database_url: str
) -> None:
    """NOWAIT covers the pool rows, not the tables: a lock on a table the statement
    writes (a migration, an index build) is waited for, and only a lock timeout shorter
    than the commit bound turns that wait into an error (nothing written) before the bound
    could call a landing write unknown. Without one the one statement is not used."""
    for lock in (0.0, 0.5, 2.0):
        writer = BatchConnection(with_timeouts(settings, commit=0.5, lock=lock), database_url)
        try:
            apply(writer, [command(1000)])
            apply(writer, [command(400)])
        finally:
            writer.close()
        assert writer.one_statement == 0
        assert writer.two_flights == {"lock wait unbounded": 2}


def test_the_batch_connection_plans_its_statements_once(
    settings: Settings, database_url: str
) -> None:
    """Generic plans (database.batch_connection_kwargs): PostgreSQL's plan cache would
    otherwise plan the one-statement batch anew on every execution."""
    writer = BatchConnection(settings, database_url)
    try:
        for _ in range(8):  # psycopg prepares a statement on its sixth execution
            apply(writer, [command(1000)])
        session = writer._connected()  # the connection its batches went on
        (mode,) = session.execute("SHOW plan_cache_mode").fetchone() or ("",)
        plans = session.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement LIKE '%contribution_guard%'"
        ).fetchall()
    finally:
        writer.close()
    assert mode == "force_generic_plan"
    assert plans and all(custom == 0 and generic >= 1 for generic, custom in plans), plans
