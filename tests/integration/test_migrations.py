"""Alembic migrations: upgrade, downgrade and upgrade again on an empty database; dry run."""

from __future__ import annotations

import psycopg
import pytest

from jackpot_grpc.adapters import migrations
from tests.conftest import create_database, drop_database, public_tables, unique_name

TABLES = {
    "jackpots",
    "contributions",
    "wins",
    "seed_fundings",
    "config_audit",
    "system_metrics",
    "request_rollups",
    "contribution_totals",
}
HEAD = "0003"


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
            "INSERT INTO contributions (game_id, wager_amount, minor_amount, major_amount,"
            " mega_amount, minor_after, major_after, mega_after) VALUES ('g', 0, 0, 0, 0, 0, 0, 0)",
        ):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(bad)
        conn.execute(
            "INSERT INTO wins (idempotency_key, jackpot_group, game_id, user_id, amount,"
            " pool_before, seed_top_up, pool_after)"
            " VALUES ('k', 'minor', 'g', gen_random_uuid(), 1, 1, 0, 0)"
        )
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO wins (idempotency_key, jackpot_group, game_id, user_id, amount,"
                " pool_before, seed_top_up, pool_after)"
                " VALUES ('k', 'minor', 'g', gen_random_uuid(), 1, 1, 0, 0)"
            )


def test_upgrade_sql_needs_no_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nowhere")
    out = migrations.upgrade_sql(None)
    assert "CREATE TABLE jackpots" in out
    assert "CREATE TABLE contributions" in out
    assert "CREATE UNIQUE INDEX contributions_idempotency_key" in out
    assert "INSERT INTO alembic_version (version_num) VALUES ('0001')" in out
    assert out.index("CREATE TABLE jackpots") < out.index("CREATE TABLE wins")


def test_upgrade_sql_from_a_revision_holds_only_what_follows() -> None:
    out = migrations.upgrade_sql("0001")
    assert "CREATE TABLE jackpots" not in out
    assert "CREATE TABLE system_metrics" in out
    assert [r.revision for r in migrations.pending("0001")] == ["0002", HEAD]
    assert migrations.pending(HEAD) == []


def test_schema_tables_are_read_from_the_migrations() -> None:
    assert set(migrations.schema_tables()) == TABLES | {"alembic_version"}
