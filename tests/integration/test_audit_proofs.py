"""`jackpot audit` re-proves every ledger row: shares from wager and rate, caps, the chain of
`*_after` amounts per pool, seed top-ups and per-pool counts; it names each bad row."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.adapters import books_audit, migrations
from jackpot_grpc.adapters.unit_of_work import Isolation, transaction
from jackpot_grpc.cli import main
from jackpot_grpc.domain.model import AuditBase, LedgerAudit
from jackpot_grpc.service.shared_audit import SharedAudit
from testkit.database import create_database, drop_database, unique_name
from testkit.ledger_tamper import Sealed, insider, run
from testkit.ledger_tamper import audit as tamper_audit
from testkit.ledger_traffic import real_traffic

pytestmark = pytest.mark.usefixtures("keep_logging")


def audit_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> tuple[int, dict[str, Any]]:
    monkeypatch.setenv("DATABASE_URL", url)
    code = main(["audit", "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
async def traffic_url(database_url: str) -> AsyncIterator[str]:
    await real_traffic(database_url)
    yield database_url


def bad_rows(report: dict[str, Any]) -> set[tuple[str, int | None, str]]:
    return {(r["table"], r["id"], r["group"]) for r in report["rows"]["bad"]}


def test_an_untouched_ledger_after_real_traffic_passes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], traffic_url: str
) -> None:
    assert (
        insider(traffic_url, "SELECT count(*) FROM contributions WHERE minor_cap IS NOT NULL") >= 2
    )
    assert (
        insider(traffic_url, "SELECT count(*) FROM contributions WHERE major_cap IS NOT NULL") >= 1
    )
    assert insider(traffic_url, "SELECT count(*) FROM seed_fundings WHERE win_id IS NOT NULL") >= 2
    code, report = audit_json(monkeypatch, capsys, traffic_url)
    assert report["rows"] == {
        "bad_count": 0,
        "bad": [],
        "legacy_without_rate": 0,
        "legacy_unsequenced": 0,  # a fresh install: the initial seeds are sequenced too
    }
    assert report["balanced"] is True and code == 0


# Each tampering as (what it does, the SQL, the row the audit must name).
TAMPERED = {
    "wrong share": (
        "UPDATE contributions SET minor_rate = minor_rate * 2"
        " WHERE id = (SELECT min(id) FROM contributions) RETURNING id",
        "contributions",
        "minor",
    ),
    "wrong cap": (
        "UPDATE contributions SET minor_cap = minor_cap + 5"
        " WHERE id = (SELECT min(id) FROM contributions WHERE minor_amount > 0"
        " AND minor_cap IS NOT NULL) RETURNING id",
        "contributions",
        "minor",
    ),
    "broken chain": (
        "UPDATE contributions SET mega_after = mega_after + 1"
        " WHERE id = (SELECT min(id) FROM contributions) RETURNING id",
        "contributions",
        "mega",
    ),
    "partial win asking another amount": (
        "UPDATE wins SET requested_amount = requested_amount + 1"
        " WHERE id = (SELECT min(id) FROM wins WHERE requested_amount IS NOT NULL) RETURNING id",
        "wins",
        "minor",
    ),
    "whole-pool win paying less than the pool": (
        "UPDATE wins SET requested_amount = NULL"
        " WHERE id = (SELECT min(id) FROM wins WHERE requested_amount IS NOT NULL) RETURNING id",
        "wins",
        "minor",
    ),
    "row inserted without a sequence or a leaf index": (
        "INSERT INTO seed_fundings (jackpot_group, amount, reason, ledger_seq, leaf_index)"
        " VALUES ('mega', 5, 'gift', NULL, NULL) RETURNING id",
        "seed_fundings",
        "mega",
    ),
    "top-up without funding row": (
        "DELETE FROM seed_fundings WHERE win_id = (SELECT min(id) FROM wins"
        " WHERE seed_top_up > 0) RETURNING win_id",
        "wins",
        "minor",
    ),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERED))
def test_a_tampered_row_is_named(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    traffic_url: str,
    tampering: str,
) -> None:
    statement, table, group = TAMPERED[tampering]
    row_id = insider(traffic_url, statement)
    assert row_id is not None

    code, report = audit_json(monkeypatch, capsys, traffic_url)
    assert code == 1 and report["balanced"] is False
    assert (table, row_id, group) in bad_rows(report)

    monkeypatch.setenv("DATABASE_URL", traffic_url)
    assert main(["audit"]) == 1
    assert f"MISMATCH: {table} #{row_id} [{group}]: " in capsys.readouterr().out


def test_a_top_up_larger_than_the_seed_needs_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], traffic_url: str
) -> None:
    """Re-sealed: the win's top-up, its funding row, its after and the pool all moved by
    100, so every sum and link still holds; only the seed in force says it is too much."""
    win_id = insider(
        traffic_url,
        "WITH w AS (UPDATE wins SET seed_top_up = seed_top_up + 100,"
        " pool_after = pool_after + 100 WHERE id = (SELECT min(id) FROM wins"
        " WHERE seed_top_up > 0) RETURNING id, jackpot_group),"
        " f AS (UPDATE seed_fundings SET amount = amount + 100"
        " WHERE win_id = (SELECT id FROM w)),"
        " j AS (UPDATE jackpots SET current_amount = current_amount + 100,"
        " total_seed_funding = total_seed_funding + 100"
        " WHERE jackpot_group = (SELECT jackpot_group FROM w))"
        " SELECT id FROM w",
    )
    _, report = audit_json(monkeypatch, capsys, traffic_url)
    problems = {
        r["problem"] for r in report["rows"]["bad"] if (r["table"], r["id"]) == ("wins", win_id)
    }
    assert any("the seed in force" in p for p in problems), report["rows"]["bad"]


def test_a_rate_other_than_the_one_in_force_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], traffic_url: str
) -> None:
    """Skimming, re-sealed: the last contribution's major rate and share zeroed, its after,
    the pool and its totals moved to match, so the share, the chain and the sums hold; the
    config history says which rate was in force."""
    row_id = insider(
        traffic_url,
        "WITH c AS (SELECT id, major_amount AS taken FROM contributions"
        " ORDER BY ledger_seq DESC LIMIT 1),"
        " u AS (UPDATE contributions SET major_rate = 0, major_amount = 0,"
        " major_after = major_after - c.taken FROM c WHERE contributions.id = c.id"
        " RETURNING contributions.id),"
        " j AS (UPDATE jackpots SET current_amount = current_amount - (SELECT taken FROM c),"
        " total_contributions = total_contributions - (SELECT taken FROM c),"
        " contribution_count = contribution_count - 1 WHERE jackpot_group = 'major')"
        " SELECT id FROM u",
    )
    _, report = audit_json(monkeypatch, capsys, traffic_url)
    named = [r for r in report["rows"]["bad"] if (r["table"], r["id"]) == ("contributions", row_id)]
    assert [r["problem"] for r in named] == ["rate 0.0000000000, but 0.0041000000 was in force"], (
        report["rows"]["bad"]
    )


def test_a_cap_other_than_the_max_in_force_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], traffic_url: str
) -> None:
    """A share cut to 0 (the pool was at its max) records the max as its cap; lowering that
    cap keeps the share's arithmetic (still nothing fitted), so only the config history,
    which says which max was in force, names it."""
    row_id = insider(
        traffic_url,
        "UPDATE contributions SET major_cap = major_cap - 1 WHERE id = (SELECT min(id)"
        " FROM contributions WHERE major_amount = 0 AND major_cap IS NOT NULL) RETURNING id",
    )
    assert row_id is not None
    _, report = audit_json(monkeypatch, capsys, traffic_url)
    assert [(r["table"], r["id"], r["problem"]) for r in report["rows"]["bad"]] == [
        ("contributions", row_id, "cap 100499, but the max in force was 100500")
    ]


def test_a_pool_amount_other_than_its_chain_end_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], traffic_url: str
) -> None:
    """The pool moved with its total (so it still balances against the ledger's sums of
    seed fundings minus wins plus total contributions recorded): its chain ends elsewhere."""
    end = insider(traffic_url, "SELECT current_amount FROM jackpots WHERE jackpot_group = 'mega'")
    insider(
        traffic_url,
        "UPDATE jackpots SET current_amount = current_amount + 3 WHERE jackpot_group = 'mega'",
    )
    code, report = audit_json(monkeypatch, capsys, traffic_url)
    assert code == 1
    assert {r["problem"] for r in report["rows"]["bad"] if r["table"] == "jackpots"} == {
        f"amount {end + 3}, but its chain of ledger rows ends at {end}"
    }


def test_a_rate_recorded_while_the_pool_was_suspended_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], traffic_url: str
) -> None:
    """The contribution made while mega was suspended records rate 0; claiming mega's usual
    rate for it contradicts the pool_lifecycle history (suspended from then to its resume)."""
    row_id = insider(
        traffic_url,
        "UPDATE contributions SET mega_rate = 0.002 WHERE mega_rate = 0 RETURNING id",
    )
    _, report = audit_json(monkeypatch, capsys, traffic_url)
    named = [r for r in report["rows"]["bad"] if (r["table"], r["id"]) == ("contributions", row_id)]
    assert sorted(r["problem"] for r in named) == [
        "rate 0.0020000000, but 0 was in force",
        # A row with the reserve's columns: its share is proved with its overflow.
        "share 0 and overflow 0, but 40 was offered (floor(20000 × 0.0020000000) and 0"
        " diverted in); reserve 0, but floor(20000 × 0.0000000000) = 0",
    ], report["rows"]["bad"]


def test_a_wrong_count_names_the_pool(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], traffic_url: str
) -> None:
    insider(
        traffic_url, "UPDATE jackpots SET win_count = win_count + 1 WHERE jackpot_group = 'mega'"
    )
    code, report = audit_json(monkeypatch, capsys, traffic_url)
    assert code == 1
    assert bad_rows(report) == {("jackpots", None, "mega")}
    (bad,) = report["rows"]["bad"]
    assert bad["problem"] == "records 9 contributions and 2 wins; the ledger has 9 and 1"
    assert all(p["balanced"] for p in report["pools"])  # the sums still balance


def test_a_changed_share_is_named_once_by_the_chain(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], traffic_url: str
) -> None:
    """A share moved by 1 with its after left alone: the share and the link are wrong at
    that row only; every later row still follows the one before it."""
    row_id = insider(
        traffic_url,
        "UPDATE contributions SET mega_amount = mega_amount + 1"
        " WHERE id = (SELECT min(id) FROM contributions) RETURNING id",
    )
    _, report = audit_json(monkeypatch, capsys, traffic_url)
    contributions = {r["problem"] for r in report["rows"]["bad"] if r["table"] == "contributions"}
    assert {r["id"] for r in report["rows"]["bad"] if r["table"] == "contributions"} == {row_id}
    assert len(contributions) == 2  # the share, and the link


def test_migration_brings_an_existing_ledger_along(
    admin_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows from before 0005: where a pool's rate never changed it is filled in and the
    shares are re-proved; where it changed they are legacy, and the audit says so."""
    name = unique_name("jackpot_proofs")
    url = create_database(admin_url, name)
    try:
        migrations.upgrade(url, "0003")
        with psycopg.connect(url) as conn:
            # A wager of 1000 at the default rates, then major's rate changed from 0.003.
            conn.execute(
                "INSERT INTO contributions (game_id, wager_amount, minor_amount, major_amount,"
                " mega_amount, minor_after, major_after, mega_after)"
                " VALUES ('g', 1000, 5, 3, 2, 10005, 100003, 1000002)"
            )
            conn.execute(
                "UPDATE jackpots SET current_amount = current_amount + CASE jackpot_group"
                " WHEN 'minor' THEN 5 WHEN 'major' THEN 3 ELSE 2 END,"
                " total_contributions = total_contributions + CASE jackpot_group"
                " WHEN 'minor' THEN 5 WHEN 'major' THEN 3 ELSE 2 END,"
                " contribution_count = contribution_count + 1"
            )
            conn.execute(
                "UPDATE contribution_totals SET contribution_count = 1, total_wagered = 1000"
            )
            conn.execute(
                "INSERT INTO config_audit (jackpot_group, actor, before, after) VALUES ('major',"
                """ 'ops', '{"contribution_rate": "0.003"}', '{"contribution_rate": "0.004"}')"""
            )
            conn.execute(
                "UPDATE jackpots SET contribution_rate = 0.004 WHERE jackpot_group = 'major'"
            )
        migrations.upgrade(url)
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT minor_rate, major_rate, mega_rate, ledger_seq FROM contributions"
            ).fetchone()
        assert row == (Decimal("0.005"), None, Decimal("0.002"), None)

        code, report = audit_json(monkeypatch, capsys, url)
        assert report["rows"]["bad"] == []
        assert report["rows"]["legacy_without_rate"] == 1
        assert code == 0

        monkeypatch.setenv("DATABASE_URL", url)
        assert main(["audit"]) == 0
        assert "note: legacy rows: 1 contributions without a recorded rate" in (
            capsys.readouterr().out
        )

        with psycopg.connect(url) as conn:  # a known rate re-proves the old row
            conn.execute("SET session_replication_role = replica")
            conn.execute("UPDATE contributions SET minor_amount = 6, minor_after = 10006")
            conn.execute(
                "UPDATE jackpots SET current_amount = 10006, total_contributions = 6"
                " WHERE jackpot_group = 'minor'"
            )
        code, report = audit_json(monkeypatch, capsys, url)
        assert code == 1 and "contributions" in {r["table"] for r in report["rows"]["bad"]}
    finally:
        drop_database(admin_url, name)


async def _audit(url: str, base: AuditBase | None) -> tuple[LedgerAudit, AuditBase | None]:
    async with (
        AsyncConnectionPool(url, min_size=1, max_size=1, open=False) as pool,
    ):
        await pool.open(wait=True, timeout=10)
        async with transaction(pool, isolation=Isolation.REPEATABLE_READ) as conn:
            return await books_audit.audit_ledger_from(conn, base)


async def test_an_incremental_audit_reproves_only_the_rows_since_and_agrees_with_a_full_one(
    traffic_url: str,
) -> None:
    full, base = await _audit(traffic_url, None)
    assert full.balanced and full.rows_from is None and base is not None
    await real_traffic(traffic_url)  # every kind of row again, after the base
    incremental, after = await _audit(traffic_url, base)
    again, _ = await _audit(traffic_url, None)
    assert incremental.rows_from == base.head and incremental.balanced
    assert (incremental.pools, incremental.contribution_count, incremental.total_wagered) == (
        again.pools,
        again.contribution_count,
        again.total_wagered,
    )
    assert (
        after is not None
        and after.head > base.head
        and after.pools == {p.group: p.current_amount for p in again.pools}
    )

    # An edit after the base is found incrementally; one before it only by a full audit.
    newer = insider(
        traffic_url,
        "UPDATE contributions SET minor_rate = minor_rate * 2 WHERE leaf_index ="
        f" (SELECT min(leaf_index) FROM contributions WHERE leaf_index >= {base.head})"
        " RETURNING id",
    )
    older = insider(
        traffic_url,
        "UPDATE contributions SET mega_rate = mega_rate * 2"
        " WHERE id = (SELECT min(id) FROM contributions) RETURNING id",
    )
    found, none = await _audit(traffic_url, base)
    assert none is None  # not clean: nothing to go on from
    assert {(r.table, r.row_id) for r in found.rows.bad} == {("contributions", newer)}
    found, _ = await _audit(traffic_url, None)
    assert {("contributions", newer), ("contributions", older)} <= {
        (r.table, r.row_id) for r in found.rows.bad
    }


async def test_a_lifecycle_row_written_past_the_ledger_is_named(traffic_url: str) -> None:
    """A pool_lifecycle row with neither a leaf index nor a leaf is named by the full audit
    and by an incremental one, also from a base recorded before pool_lifecycle rows carried
    indexes (its max ids know no pool_lifecycle: every such row is read)."""
    _, base = await _audit(traffic_url, None)
    assert base is not None and base.max_ids["pool_lifecycle"] > 0
    row_id = insider(
        traffic_url,
        "INSERT INTO pool_lifecycle (jackpot_group, action, client, leaf_index)"
        " VALUES ('mega', 'resume', 'ops', NULL) RETURNING id",
    )
    older = dataclasses.replace(
        base, max_ids={t: i for t, i in base.max_ids.items() if t != "pool_lifecycle"}
    )
    for start in (None, base, older):
        found, after = await _audit(traffic_url, start)
        assert after is None
        assert [(r.table, r.row_id, r.problem) for r in found.rows.bad] == [
            ("pool_lifecycle", row_id, "no leaf index and no leaf: written past the ledger")
        ]


async def test_the_background_audit_is_incremental_with_a_full_one_every_so_often(
    traffic_url: str,
) -> None:
    async with AsyncConnectionPool(traffic_url, min_size=1, max_size=2, open=False) as pool:
        await pool.open(wait=True, timeout=10)
        audits = SharedAudit(pool, 0.0, host="a", pid=1, full_every=3)
        froms: list[int | None] = []
        for _ in range(4):
            await real_traffic(traffic_url)
            recorded = await audits.audit_now() if not froms else (await audits.tick()).audit
            assert recorded is not None and recorded.books.balanced
            froms.append(recorded.books.rows_from)
    assert froms[0] is None and froms[3] is None  # the first, then every third: full
    assert froms[1] is not None and froms[2] is not None and froms[1] < froms[2]


def test_0013_gives_the_rows_waiting_for_a_leaf_their_indexes_in_0010s_order(
    admin_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A ledger at 0012 whose last rows are no leaf yet (no checkpoint since), pool
    lifecycle rows (0012) among them: 0013 gives them the indexes 0010's rule would have
    (sequence order), the head starts after them, and the first checkpoint makes them
    those leaves; the audit against it passes."""
    name = unique_name("jackpot_receipts")
    url = create_database(admin_url, name)
    try:
        migrations.upgrade(url, "0010")  # the three initial seeds are leaves 0 to 2
        with psycopg.connect(url) as conn:
            for amount in (7, 11):  # two seed fundings after them, no leaf yet
                conn.execute(
                    "INSERT INTO seed_fundings (jackpot_group, amount, reason)"
                    " VALUES ('mega', %s, 'gift')",
                    (amount,),
                )
        migrations.upgrade(url, "0012")
        with psycopg.connect(url) as conn:
            for action in ("suspend", "resume"):  # the pool lifecycle, between seed fundings
                conn.execute(
                    "INSERT INTO pool_lifecycle (jackpot_group, action, client)"
                    " VALUES ('major', %s, 'ops')",
                    (action,),
                )
            conn.execute(
                "INSERT INTO seed_fundings (jackpot_group, amount, reason)"
                " VALUES ('mega', 13, 'gift')"
            )
            conn.execute(
                "UPDATE jackpots SET current_amount = current_amount + 31,"
                " total_seed_funding = total_seed_funding + 31 WHERE jackpot_group = 'mega'"
            )
        migrations.upgrade(url)
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT amount, leaf_index FROM seed_fundings ORDER BY ledger_seq"
            ).fetchall()
            lifecycle = conn.execute(
                "SELECT action, leaf_index FROM pool_lifecycle ORDER BY ledger_seq"
            ).fetchall()
            head = conn.execute("SELECT size, receipts_from FROM ledger_head").fetchone()
        assert rows[-3:] == [(7, 3), (11, 4), (13, 7)] and [i for _, i in rows[:3]] == [None] * 3
        assert lifecycle == [("suspend", 5), ("resume", 6)]
        assert head == (8, 8)
        sealed = Sealed(url, tmp_path / "k", tmp_path / "k.pub", tmp_path / "log")
        assert run(monkeypatch, sealed, "ledger", "keygen", "--out", str(sealed.key)) == 0
        assert run(monkeypatch, sealed, "ledger", "checkpoint") == 0
        code, report = tamper_audit(monkeypatch, capsys, sealed)
        assert report["findings"] == [] and report["leaves"] == 8 and code == 0
    finally:
        drop_database(admin_url, name)


def _plan(url: str, sql: str) -> str:
    """`sql`'s plan where an index applies (a tiny table is read whole otherwise)."""
    with psycopg.connect(url) as conn:
        conn.execute("SET enable_seqscan = off")
        return "\n".join(str(r[0]) for r in conn.execute(f"EXPLAIN {sql}"))


async def _wins_as_readers_see_them(url: str) -> tuple[list[int | None], list[int | None]]:
    """The hit history's leaf indexes (newest first), and each win's leaf found by its
    row (ids 1 to 3) as GetLedgerProof finds it."""
    from psycopg import AsyncConnection

    from jackpot_grpc.adapters import ledger_store
    from jackpot_grpc.adapters.win_history import list_wins

    async with await AsyncConnection.connect(url) as conn:
        history = await list_wins(conn, group=None, start=None, end=None, after=None, limit=9)
        found = [await ledger_store.proof_leaf(conn, row=("wins", i)) for i in (1, 2, 3)]
    return [w.ledger_index for w in history], [
        None if f is None or (f[0].table, f[0].row_id) != ("wins", i) else f[0].index
        for i, f in zip((1, 2, 3), found, strict=True)
    ]


def test_0017_finds_rows_from_before_receipts_by_table_and_id_and_new_ones_by_index(
    admin_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """0017 narrows UNIQUE (ledger_table, row_id) of ledger_leaves to the leaves below
    receipts (0013): a win and a seed funding written before 0013 still answer with their
    leaf index (receipt, hit history, proof by row), looked up on that partial index; rows
    written since answer with their own; a new leaf is not in the index; the audit against
    a checkpoint passes and names a row that is neither a leaf nor carries an index."""
    from jackpot_grpc.adapters import ledger_store
    from jackpot_grpc.adapters.pool_store import receipt_of

    name = unique_name("jackpot_receipts")
    url = create_database(admin_url, name)
    try:
        migrations.upgrade(url, "0012")
        win = (
            "INSERT INTO wins (client, idempotency_key, fingerprint, jackpot_group, game_id,"
            " user_id, amount, pool_before, seed_top_up, pool_after)"
            " VALUES ('c', %s, '\\x00', 'mega', 'g', gen_random_uuid(), 1, 1000000, 0, 999999)"
        )
        with psycopg.connect(url) as conn:
            conn.execute(win, ("old",))
            # A checkpoint then (0010's rule) made it a leaf: no index of its own at 0013.
            ledger_store.assign_leaves_by_sequence(conn, ledger_store.TABLES)
        migrations.upgrade(url, "0016")
        with psycopg.connect(url) as conn:  # before 0017: an index of every leaf's row
            conn.execute(win, ("new",))
        migrations.upgrade(url)
        sealed = Sealed(url, tmp_path / "k", tmp_path / "k.pub", tmp_path / "log")
        assert run(monkeypatch, sealed, "ledger", "keygen", "--out", str(sealed.key)) == 0
        assert run(monkeypatch, sealed, "ledger", "checkpoint") == 0
        with psycopg.connect(url) as conn:
            receipts_from = ledger_store.head(conn).receipts_from
            assert conn.execute("SELECT ledger_receipts_from()").fetchone() == (receipts_from,)
            rows = conn.execute(
                f"SELECT idempotency_key, leaf_index, {receipt_of('wins')} FROM wins ORDER BY id"
            ).fetchall()
            seeds = conn.execute(
                f"SELECT id, {receipt_of('seed_fundings')} FROM seed_fundings ORDER BY id"
            ).fetchall()
            leaves: dict[str, int] = dict(
                conn.execute(
                    "SELECT (ledger_table, row_id)::text, leaf_index FROM ledger_leaves"
                ).fetchall()
            )
        (_, old_own, old_receipt), (_, new_own, new_receipt) = rows
        assert old_own is None and old_receipt == leaves["(wins,1)"] < receipts_from
        assert new_own == new_receipt == leaves["(wins,2)"] >= receipts_from
        assert [r for _, r in seeds] == [leaves[f"(seed_fundings,{i})"] for i, _ in seeds]
        lookup = (
            "SELECT leaf_index FROM ledger_leaves WHERE ledger_table = 'wins' AND row_id = 1"
            " AND leaf_index < ledger_receipts_from()"
        )
        assert "ledger_leaves_row_before_receipts" in _plan(url, lookup)
        history, by_row = asyncio.run(_wins_as_readers_see_them(url))
        assert history == [new_receipt, old_receipt]
        assert by_row == [old_receipt, new_receipt, None]
        with psycopg.connect(url) as conn:  # a new leaf's row is not in the partial index
            in_index = conn.execute(
                "SELECT count(*) FROM ledger_leaves WHERE leaf_index < ledger_receipts_from()"
            ).fetchone()
            assert in_index == (receipts_from,)
        _, report = tamper_audit(monkeypatch, capsys, sealed)  # (these wins' books: no)
        assert report["findings"] == []
        # A row with neither a leaf index nor a leaf below receipts: written past the ledger.
        row_id = insider(
            url,
            "INSERT INTO seed_fundings (jackpot_group, amount, reason, leaf_index)"
            " VALUES ('mega', 1, 'gift', NULL) RETURNING id",
        )
        code, report = audit_json(monkeypatch, capsys, url)
        assert ("seed_fundings", row_id, "mega") in bad_rows(report) and code == 1
        migrations.downgrade(url, "0016")
        migrations.upgrade(url)
    finally:
        drop_database(admin_url, name)
