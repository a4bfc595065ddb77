"""Alembic migrations: upgrade, downgrade and upgrade again on an empty database; dry run;
concurrent runs serialised by the migration lock."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jackpot_grpc.adapters import migrations
from jackpot_grpc.domain import idempotency
from testkit.database import create_database, drop_database, public_tables, unique_name

TABLES = {
    "jackpots",
    "contributions",
    "wins",
    "seed_fundings",
    "config_audit",
    "pool_lifecycle",
    "system_metrics",
    "request_rollups",
    "contribution_totals",
    "ledger_audits",
    "ledger_chain_starts",
    "ledger_leaves",
    "ledger_head",
    "write_heartbeat",
}
HEAD = "0018"


def revision(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT version_num FROM alembic_version").fetchall()]


def test_upgrade_downgrade_upgrade(admin_url: str) -> None:
    name = unique_name("jackpot_migrate")
    url = create_database(admin_url, name)
    try:
        assert public_tables(url) == set()

        migrations.upgrade(url)
        assert public_tables(url) == TABLES | {"alembic_version"}
        assert revision(url) == [HEAD]
        with psycopg.connect(url) as conn:
            pools = conn.execute(
                "SELECT jackpot_group, current_amount, total_seed_funding FROM jackpots"
                " ORDER BY lock_order"
            ).fetchall()
            seeds = conn.execute(
                "SELECT jackpot_group, amount FROM seed_fundings ORDER BY id"
            ).fetchall()
        assert pools == [
            ("minor", 10000, 10000),
            ("major", 100000, 100000),
            ("mega", 1000000, 1000000),
        ]
        assert seeds == [("minor", 10000), ("major", 100000), ("mega", 1000000)]

        migrations.upgrade(url)  # already at head: a no-op
        assert revision(url) == [HEAD]

        migrations.downgrade(url, "base")
        assert public_tables(url) == {"alembic_version"}
        assert revision(url) == []

        migrations.upgrade(url)
        assert public_tables(url) == TABLES | {"alembic_version"}
        assert revision(url) == [HEAD]
    finally:
        drop_database(admin_url, name)


def test_contribution_totals_are_filled_from_an_existing_ledger(admin_url: str) -> None:
    name = unique_name("jackpot_migrate")
    url = create_database(admin_url, name)
    try:
        migrations.upgrade(url, "0002")
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO contributions (game_id, wager_amount, minor_amount, major_amount,"
                " mega_amount, minor_after, major_after, mega_after)"
                " SELECT 'g', w, 0, 0, 0, 0, 0, 0 FROM unnest(ARRAY[100, 2500, 7]) AS w"
            )
        migrations.upgrade(url)
        with psycopg.connect(url) as conn:
            totals = conn.execute(
                "SELECT contribution_count, total_wagered FROM contribution_totals"
            ).fetchall()
        assert totals == [(3, 2607)]
    finally:
        drop_database(admin_url, name)


def test_schema_refuses_what_the_rules_refuse(database_url: str) -> None:
    """The CHECK constraints back the domain rules up."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        for bad in (
            "UPDATE jackpots SET current_amount = -1 WHERE jackpot_group = 'minor'",
            "UPDATE jackpots SET contribution_rate = 1.5 WHERE jackpot_group = 'minor'",
            "UPDATE jackpots SET max_amount = seed_amount WHERE jackpot_group = 'minor'",
            "INSERT INTO contributions (client, game_id, wager_amount, minor_amount,"
            " major_amount, mega_amount, minor_after, major_after, mega_after)"
            " VALUES ('c', 'g', 0, 0, 0, 0, 0, 0, 0)",
            # Rates summing above 1: money from nowhere (0.005 + 0.003 + 1).
            "UPDATE jackpots SET contribution_rate = 1 WHERE jackpot_group = 'mega'",
            # A key bound to nothing would replay for any request.
            "INSERT INTO wins (client, idempotency_key, jackpot_group, game_id, user_id,"
            " amount, pool_before, seed_top_up, pool_after)"
            " VALUES ('c', 'k', 'minor', 'g', gen_random_uuid(), 1, 1, 0, 0)",
        ):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(bad)
        keyed_win = (
            "INSERT INTO wins (client, idempotency_key, fingerprint, jackpot_group, game_id,"
            " user_id, amount, pool_before, seed_top_up, pool_after)"
            " VALUES (%s, 'k', '\\x00', 'minor', 'g', gen_random_uuid(), 1, 1, 0, 0)"
        )
        conn.execute(keyed_win, ("c",))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(keyed_win, ("c",))
        conn.execute(keyed_win, ("another client",))  # keys are scoped per client
        # Every ledger row says who wrote it.
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute(
                "INSERT INTO contributions (game_id, wager_amount, minor_amount, major_amount,"
                " mega_amount, minor_after, major_after, mega_after)"
                " VALUES ('g', 1, 0, 0, 0, 0, 0, 0)"
            )
        # Lowering a rate is always allowed, even while the sum is above 1.
        conn.execute("ALTER TABLE jackpots DISABLE TRIGGER jackpots_rates_sum_at_most_one")
        conn.execute("UPDATE jackpots SET contribution_rate = 1")
        conn.execute("ALTER TABLE jackpots ENABLE TRIGGER jackpots_rates_sum_at_most_one")
        conn.execute("UPDATE jackpots SET contribution_rate = 0.5 WHERE jackpot_group = 'minor'")


def test_0014_keeps_old_rows_leaves_and_behaviour_and_bounds_reserve_rates(
    admin_url: str,
) -> None:
    """Rows written before 0014 keep their leaf bytes (no column of theirs changes); pools
    start at reserve 0 and ACCUMULATE with `contributed` = their contributions; the rate-sum
    trigger counts reserve rates too."""
    from psycopg.rows import dict_row

    from jackpot_grpc.ledger.rows import leaf_of

    name = unique_name("jackpot_migrate")
    url = create_database(admin_url, name)
    try:
        migrations.upgrade(url, "0013")
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO contributions (client, game_id, wager_amount, minor_amount,"
                " major_amount, mega_amount, minor_after, major_after, mega_after, minor_rate)"
                " VALUES ('c', 'g', 1000, 5, 3, 2, 10005, 100003, 1000002, 0.005)"
            )
            conn.execute(
                "UPDATE jackpots SET total_contributions = 5, current_amount = 10005"
                " WHERE jackpot_group = 'minor'"
            )

        def leaves() -> list[bytes]:
            with psycopg.connect(url, row_factory=dict_row) as conn:
                rows = [
                    (table, row)
                    for table in ("contributions", "seed_fundings")
                    for row in conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
                ]
            return [leaf_of(table, row, index) for index, (table, row) in enumerate(rows)]

        before = leaves()
        migrations.upgrade(url)
        assert leaves() == before
        with psycopg.connect(url, autocommit=True) as conn:  # each transaction() commits
            pools = conn.execute(
                "SELECT jackpot_group, reserve_rate, overflow_policy, overflow_target,"
                " total_contributed FROM jackpots ORDER BY lock_order"
            ).fetchall()
            assert [(g, float(r), p, t) for g, r, p, t, _ in pools] == [
                (g, 0.0, "accumulate", None) for g in ("minor", "major", "mega")
            ]
            assert [c for *_, c in pools] == [5, 0, 0]
            # 0.005 + 0.003 + 0.002 + 0.991 > 1: refused at commit, whoever writes.
            with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
                conn.execute(
                    "UPDATE jackpots SET reserve_rate = 0.991 WHERE jackpot_group = 'mega'"
                )
            conn.execute("UPDATE jackpots SET reserve_rate = 0.99 WHERE jackpot_group = 'mega'")
            with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
                conn.execute(
                    "UPDATE jackpots SET overflow_policy = 'divert', overflow_target = 'minor'"
                    " WHERE jackpot_group = 'minor'"
                )
        migrations.downgrade(url, "0010")
    finally:
        drop_database(admin_url, name)


def test_0004_fingerprints_rows_written_before_it_as_the_code_does(admin_url: str) -> None:
    """The SQL backfill and domain.idempotency hash the same canonical text."""
    name = unique_name("jackpot_migrate")
    url = create_database(admin_url, name)
    user = uuid.uuid4()
    try:
        migrations.upgrade(url, "0003")
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO contributions (idempotency_key, game_id, wager_amount,"
                " minor_amount, major_amount, mega_amount, minor_after, major_after, mega_after)"
                " VALUES ('c-1', 'slots-é', 1234, 0, 0, 0, 0, 0, 0),"
                " (NULL, 'slots', 1, 0, 0, 0, 0, 0, 0)"
            )
            conn.execute(
                "INSERT INTO wins (idempotency_key, jackpot_group, game_id, user_id,"
                " requested_amount, amount, pool_before, seed_top_up, pool_after)"
                " VALUES ('w-1', 'major', 'poker', %(u)s, 50, 50, 100, 0, 50),"
                " ('w-2', 'mega', 'poker', %(u)s, NULL, 100, 100, 0, 0)",
                {"u": user},
            )
        migrations.upgrade(url)
        with psycopg.connect(url) as conn:
            contributions = conn.execute(
                "SELECT idempotency_key, fingerprint FROM contributions ORDER BY id"
            ).fetchall()
            wins: dict[str, bytes] = dict(
                conn.execute("SELECT idempotency_key, fingerprint FROM wins").fetchall()
            )
        assert contributions == [
            ("c-1", idempotency.contribute_fingerprint("slots-é", 1234)),
            (None, None),
        ]
        assert wins == {
            "w-1": idempotency.win_fingerprint("major", "poker", user, 50),
            "w-2": idempotency.win_fingerprint("mega", "poker", user, None),
        }
    finally:
        drop_database(admin_url, name)


def test_0008_gives_existing_ledger_rows_the_anonymous_client_and_keeps_their_keys(
    admin_url: str,
) -> None:
    """Rows from before 0008 were written in the one implicit scope, "anonymous": they get
    that client, their keys stay unique in it, and other clients may reuse them."""
    name = unique_name("jackpot_migrate")
    url = create_database(admin_url, name)
    contribution = (
        "INSERT INTO contributions ({client}idempotency_key, fingerprint, game_id,"
        " wager_amount, minor_amount, major_amount, mega_amount, minor_after, major_after,"
        " mega_after) VALUES ({value}'c-1', '\\x01', 'g', 1, 0, 0, 0, 0, 0, 0)"
    )
    win = (
        "INSERT INTO wins ({client}idempotency_key, fingerprint, jackpot_group, game_id,"
        " user_id, amount, pool_before, seed_top_up, pool_after)"
        " VALUES ({value}'w-1', '\\x02', 'minor', 'g', gen_random_uuid(), 1, 1, 0, 0)"
    )
    try:
        migrations.upgrade(url, "0007")
        with psycopg.connect(url) as conn:
            conn.execute(contribution.format(client="", value=""))
            conn.execute(
                contribution.replace("'c-1', '\\x01'", "NULL, NULL").format(client="", value="")
            )
            conn.execute(win.format(client="", value=""))
        migrations.upgrade(url, "0008")
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute(
                "SELECT client, idempotency_key FROM contributions ORDER BY id"
            ).fetchall() == [("anonymous", "c-1"), ("anonymous", None)]
            assert conn.execute("SELECT client, idempotency_key FROM wins").fetchall() == [
                ("anonymous", "w-1")
            ]
            for statement in (contribution, win):
                with pytest.raises(psycopg.errors.UniqueViolation):
                    conn.execute(statement.format(client="client, ", value="'anonymous', "))
                conn.execute(statement.format(client="client, ", value="'slots-backend', "))
            indexes = {
                row[0]
                for row in conn.execute(
                    "SELECT indexname FROM pg_indexes WHERE tablename IN ('contributions', 'wins')"
                )
            }
        assert {"contributions_client_idempotency_key", "wins_client_idempotency_key"} <= indexes
        assert not {"contributions_idempotency_key", "wins_idempotency_key"} & indexes

        # Down again once the keys fit the old, service-wide scope.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM contributions WHERE client = 'slots-backend'")
            conn.execute("DELETE FROM wins WHERE client = 'slots-backend'")
        migrations.downgrade(url, "0007")
        with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(win.format(client="", value=""))
    finally:
        drop_database(admin_url, name)


def test_upgrade_sql_needs_no_database(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nowhere")
    with caplog.at_level(logging.INFO):
        out = migrations.upgrade_sql(None)
    # printing SQL (a dry run, a backup's table list) must not read as having migrated
    assert "Running upgrade" not in caplog.text
    assert "CREATE TABLE jackpots" in out
    assert "CREATE TABLE contributions" in out
    assert "CREATE UNIQUE INDEX contributions_idempotency_key" in out
    assert "INSERT INTO alembic_version (version_num) VALUES ('0001')" in out
    assert out.index("CREATE TABLE jackpots") < out.index("CREATE TABLE wins")


def migrate_process(url: str, cwd: Path) -> subprocess.Popen[bytes]:
    """`jackpot migrate` as its own process (alembic's context is per process)."""
    env = {**os.environ, "DATABASE_URL": url, "OTEL_SDK_DISABLED": "true"}
    return subprocess.Popen(
        [sys.executable, "-m", "jackpot_grpc.cli", "migrate"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def advisory_waiters(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    key = migrations.MIGRATION_LOCK_KEY
    found = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND ((classid::bigint << 32) | objid::bigint) = %s",
        (key,),
    ).fetchone()
    assert found is not None
    return int(found[0])


def test_concurrent_migrations_queue_on_the_lock_and_apply_once(
    admin_url: str, tmp_path: Path
) -> None:
    """Two `jackpot migrate` on a fresh database: both wait for the migration lock (held
    here until both are queued), then one upgrades and the other finds nothing to do."""
    name = unique_name("jackpot_migrate")
    url = create_database(admin_url, name)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with psycopg.connect(url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (migrations.MIGRATION_LOCK_KEY,))
            procs = [migrate_process(url, tmp_path) for _ in range(2)]
            deadline = time.monotonic() + 30
            while advisory_waiters(holder) < 2:
                assert all(p.poll() is None for p in procs), "a migrate ran past the lock"
                assert time.monotonic() < deadline, "the migrations never waited on the lock"
                time.sleep(0.1)
            holder.execute("SELECT pg_advisory_unlock(%s)", (migrations.MIGRATION_LOCK_KEY,))
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, out.decode()
        assert revision(url) == [HEAD]
        assert public_tables(url) == TABLES | {"alembic_version"}
        with psycopg.connect(url) as conn:
            seeds = conn.execute("SELECT count(*) FROM seed_fundings").fetchone()
            pools = conn.execute("SELECT count(*) FROM jackpots").fetchone()
        assert seeds == (3,) and pools == (3,)  # the seed rows were written once
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        drop_database(admin_url, name)


def test_upgrade_sql_from_a_revision_holds_only_what_follows() -> None:
    out = migrations.upgrade_sql("0001")
    assert "CREATE TABLE jackpots" not in out
    assert "CREATE TABLE system_metrics" in out
    assert [r.revision for r in migrations.pending("0001")] == [
        f"{n:04d}" for n in range(2, int(HEAD) + 1)
    ]
    assert migrations.pending(HEAD) == []


def test_schema_tables_are_read_from_the_migrations() -> None:
    assert set(migrations.schema_tables()) == TABLES | {"alembic_version"}


# A contribution row as the previous release writes it (deploy/PREVIOUS_RELEASE: it knows
# nothing of suspension, so every pool gets its configured rate and share).
OLD_RELEASE_CONTRIBUTION = (
    "INSERT INTO contributions (idempotency_key, fingerprint, client, game_id, wager_amount,"
    " minor_amount, major_amount, mega_amount, minor_after, major_after, mega_after,"
    " minor_rate, minor_cap, major_rate, major_cap, mega_rate, mega_cap)"
    " VALUES (%s, '\\x00', 'old', 'g', 1000, %s, 3, 1, 0, 0, 0, %s, NULL, 0.003, NULL,"
    " 0.001, NULL)"
)
OLD_RELEASE_WIN = (
    "INSERT INTO wins (idempotency_key, fingerprint, client, jackpot_group, game_id, user_id,"
    " requested_amount, amount, pool_before, seed_top_up, pool_after)"
    " VALUES (%s, '\\x00', 'old', 'minor', 'g', gen_random_uuid(), 1, 1, 1, 0, 0)"
)


def test_0012_guards_refuse_what_an_older_release_would_write(database_url: str) -> None:
    """After a rollback (or beside a newer process) an older release ignores `suspended` and
    `pending_config`: the database refuses its share for a suspended pool, its win on a
    suspended pool, and its win that would skip a pending change. The rows this release
    writes for the same cases (rate and share 0) go in."""
    Refused = psycopg.errors.ObjectNotInPrerequisiteState
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(OLD_RELEASE_CONTRIBUTION, ("before", 5, 0.005))  # nothing suspended
        conn.execute(OLD_RELEASE_WIN, ("win-before",))
        conn.execute("UPDATE jackpots SET suspended = true WHERE jackpot_group = 'minor'")
        with pytest.raises(Refused, match="minor pool is suspended"):
            conn.execute(OLD_RELEASE_CONTRIBUTION, ("share", 5, 0.005))
        with pytest.raises(Refused, match="minor pool is suspended"):
            conn.execute(OLD_RELEASE_CONTRIBUTION, ("rate-only", 0, 0.005))
        with pytest.raises(Refused, match="minor pool is suspended"):
            conn.execute(OLD_RELEASE_CONTRIBUTION, ("legacy-null-rate", 0, None))
        conn.execute(OLD_RELEASE_CONTRIBUTION, ("as-this-release", 0, 0))  # no share, rate 0
        with pytest.raises(Refused, match="minor pool is suspended: it pays no win"):
            conn.execute(OLD_RELEASE_WIN, ("win-suspended",))
        conn.execute("UPDATE jackpots SET suspended = false WHERE jackpot_group = 'minor'")
        conn.execute(OLD_RELEASE_CONTRIBUTION, ("resumed", 5, 0.005))
        conn.execute(
            "UPDATE jackpots SET pending_config = '{\"seed_amount\": 2}'"
            " WHERE jackpot_group = 'minor'"
        )
        with pytest.raises(Refused, match="pending config change"):
            conn.execute(OLD_RELEASE_WIN, ("win-pending",))
        # This release clears the pending change in the win's transaction, then inserts.
        with conn.transaction():
            conn.execute("UPDATE jackpots SET pending_config = NULL WHERE jackpot_group = 'minor'")
            conn.execute(OLD_RELEASE_WIN, ("win-applied",))
        keys = conn.execute(
            "SELECT idempotency_key FROM contributions UNION ALL"
            " SELECT idempotency_key FROM wins ORDER BY 1"
        ).fetchall()
    assert [k for (k,) in keys] == sorted(
        ["before", "as-this-release", "resumed", "win-before", "win-applied"]
    )
