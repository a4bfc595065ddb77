"""`jackpot audit --checkpoints … --public-key …` on copies of a real ledger after a
checkpoint: an insider's edit of any kind (triggers bypassed, as a superuser can) fails
the audit naming the first bad row; the untouched copy passes; an edited checkpoint file
fails too."""

from __future__ import annotations

import asyncio
import json
import stat
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.adapters import ledger_store
from jackpot_grpc.domain.model import Group, OverflowPolicy, WinCommand
from jackpot_grpc.ledger.merkle import Frontier
from jackpot_grpc.ledger.rows import leaf_of
from jackpot_grpc.service.jackpot import JackpotService
from testkit.ledger_tamper import Sealed, audit, insider, run
from testkit.ledger_traffic import change, contribute, real_traffic
from testkit.random_refs import random_game_id, random_key, random_user_id

pytestmark = pytest.mark.usefixtures("keep_logging")


def test_keygen_writes_a_private_key_only_its_owner_reads(
    sealed: Sealed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stat.S_IMODE(sealed.key.stat().st_mode) == 0o600
    assert sealed.key.read_text().startswith("PRIVATE+KEY+jackpot-ledger+")
    assert sealed.public_key.read_text().startswith("jackpot-ledger+")
    # Never overwritten.
    assert run(monkeypatch, sealed, "ledger", "keygen", "--out", str(sealed.key)) == 1
    assert "exists" in capsys.readouterr().err


def test_the_untouched_ledger_passes(
    sealed: Sealed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = audit(monkeypatch, capsys, sealed)
    assert report["findings"] == [] and report["ok"] is True
    assert report["checkpoints"] == 2 and report["pending"] == 1
    assert report["leaves"] == report["latest_checkpoint_size"] > 30
    assert code == 0


def test_every_ledger_row_has_a_gap_free_leaf_in_commit_order(sealed: Sealed) -> None:
    with psycopg.connect(sealed.url) as conn:
        indexes = [r[0] for r in conn.execute("SELECT leaf_index FROM ledger_leaves ORDER BY 1")]
        seqs = [
            r[0]
            for r in conn.execute("SELECT ledger_seq FROM ledger_leaves ORDER BY leaf_index")
            if r[0] is not None
        ]
        tables = {r[0] for r in conn.execute("SELECT DISTINCT ledger_table FROM ledger_leaves")}
    assert indexes == list(range(len(indexes)))
    assert seqs == sorted(seqs)
    assert tables == {"contributions", "wins", "seed_fundings", "config_audit", "pool_lifecycle"}


def test_the_database_refuses_updates_and_deletes_of_the_ledger(sealed: Sealed) -> None:
    for statement in (
        "UPDATE contributions SET client = 'x'",
        "DELETE FROM wins",
        "UPDATE config_audit SET actor = 'x'",
        "DELETE FROM ledger_leaves",
        "TRUNCATE seed_fundings CASCADE",
        "UPDATE pool_lifecycle SET reason = 'x'",
    ):
        with (
            psycopg.connect(sealed.url) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"),
        ):
            conn.execute(statement)


def first(table: str) -> str:
    return f"(SELECT min(id) FROM {table})"


# Each edit: the SQL (returning the id of the row the audit must name) and its table.
EDITS: dict[str, tuple[str, str]] = {
    "contribution re-attributed to another client": (
        "UPDATE contributions SET client = 'other'"
        f" WHERE id = {first('contributions')} RETURNING id",
        "contributions",
    ),
    "contribution's game changed": (
        "UPDATE contributions SET game_id = 'other'"
        f" WHERE id = {first('contributions')} + 3 RETURNING id",
        "contributions",
    ),
    "win's payee changed": (
        f"UPDATE wins SET user_id = gen_random_uuid() WHERE id = {first('wins')} RETURNING id",
        "wins",
    ),
    "row's time moved": (
        "UPDATE seed_fundings SET created_at = created_at - interval '1 day'"
        " WHERE id = (SELECT max(id) FROM seed_fundings) RETURNING id",
        "seed_fundings",
    ),
    "config change's actor rewritten": (
        f"UPDATE config_audit SET actor = 'nobody' WHERE id = {first('config_audit')} RETURNING id",
        "config_audit",
    ),
    "config change's rates rewritten": (
        "UPDATE config_audit SET after = jsonb_set(after, '{contribution_rate}', '\"0.0001\"')"
        f" WHERE id = {first('config_audit')} RETURNING id",
        "config_audit",
    ),
    "config change deleted": (
        f"DELETE FROM config_audit WHERE id = {first('config_audit')} RETURNING id",
        "config_audit",
    ),
    "wager changed with its shares and afters": (
        "UPDATE contributions SET wager_amount = wager_amount * 2,"
        " minor_amount = minor_amount * 2, minor_after = minor_after + minor_amount"
        f" WHERE id = {first('contributions')} + 1 RETURNING id",
        "contributions",
    ),
    "rates and shares zeroed (skimming)": (
        "WITH z AS (UPDATE contributions SET minor_rate = 0, minor_amount = 0"
        " WHERE id >= (SELECT min(id) + 2 FROM contributions) RETURNING id)"
        " SELECT min(id) FROM z",
        "contributions",
    ),
    "rows deleted from the middle": (
        "WITH d AS (DELETE FROM contributions WHERE id IN"
        " (SELECT id FROM contributions ORDER BY id OFFSET 5 LIMIT 3) RETURNING id)"
        " SELECT min(id) FROM d",
        "contributions",
    ),
    "a win deleted with its top-up": (
        "WITH w AS (SELECT min(id) AS id FROM wins WHERE seed_top_up > 0),"
        " s AS (DELETE FROM seed_fundings WHERE win_id = (SELECT id FROM w)),"
        " d AS (DELETE FROM wins WHERE id = (SELECT id FROM w) RETURNING id)"
        " SELECT id FROM d",
        "wins",
    ),
    "a partial win paying other than was asked": (
        "UPDATE wins SET amount = amount - 1, pool_after = pool_after + 1"
        " WHERE id = (SELECT min(id) FROM wins WHERE requested_amount IS NOT NULL) RETURNING id",
        "wins",
    ),
    "a whole-pool win paying less": (
        "UPDATE wins SET amount = amount - 1, pool_after = pool_after + 1"
        " WHERE id = (SELECT min(id) FROM wins WHERE requested_amount IS NULL) RETURNING id",
        "wins",
    ),
    "a top-up larger than the seed needs": (
        "UPDATE seed_fundings SET amount = amount + 100"
        " WHERE id = (SELECT min(id) FROM seed_fundings WHERE win_id IS NOT NULL) RETURNING id",
        "seed_fundings",
    ),
    "two rows' contents swapped (reordered)": (
        "WITH a AS (SELECT * FROM contributions ORDER BY id LIMIT 1),"
        " b AS (SELECT * FROM contributions ORDER BY id OFFSET 1 LIMIT 1),"
        " u AS (UPDATE contributions c SET wager_amount = CASE WHEN c.id = a.id"
        " THEN b.wager_amount ELSE a.wager_amount END FROM a, b WHERE c.id IN (a.id, b.id)"
        " RETURNING c.id) SELECT min(id) FROM u",
        "contributions",
    ),
    "two leaves' places swapped (reordered)": (
        # The first two contribution leaves trade rows (and recorded hashes); the unique
        # (table, row) constraint is dodged through a negative id.
        "UPDATE ledger_leaves SET row_id = -row_id WHERE ledger_table = 'contributions'"
        " AND row_id IN (SELECT min(id) FROM contributions);"
        " UPDATE ledger_leaves SET row_id = row_id - 1 WHERE ledger_table = 'contributions'"
        " AND row_id = (SELECT min(id) + 1 FROM contributions);"
        " UPDATE ledger_leaves SET row_id = -row_id + 1 WHERE ledger_table = 'contributions'"
        " AND row_id < 0 RETURNING row_id",
        "contributions",
    ),
    "a row inserted without a sequence or a leaf index": (
        "INSERT INTO wins (client, jackpot_group, game_id, user_id, amount, pool_before,"
        " seed_top_up, pool_after, ledger_seq, leaf_index) VALUES ('game-a', 'mega', 'g',"
        " gen_random_uuid(), 1, 2, 0, 1, NULL, NULL) RETURNING id",
        "wins",
    ),
    "a row inserted with an old sequence number and an old leaf's index": (
        # Leaf 1 is an initial seed funding, a row from before receipts (no index of its
        # own), so the unique index on leaf_index lets it in.
        "INSERT INTO seed_fundings (jackpot_group, amount, reason, ledger_seq, leaf_index)"
        " VALUES ('minor', 5, 'gift', 0, 1) RETURNING id",
        "seed_fundings",
    ),
    "a correctly sequenced fake win slipped before the checkpoint": (
        # The fake takes a real win's place (its index and sequence) in the log; the real
        # one moves past the head, as if written after it. The displaced win is named.
        "WITH moved AS (UPDATE wins SET leaf_index = leaf_index + 1000000,"
        " ledger_seq = ledger_seq + 1000000 WHERE id = (SELECT max(id) FROM wins)"
        " RETURNING *), fake AS (INSERT INTO wins (client, jackpot_group, game_id, user_id,"
        " amount, pool_before, seed_top_up, pool_after, ledger_seq, leaf_index)"
        " SELECT client, jackpot_group, game_id, gen_random_uuid(), amount, pool_before,"
        " seed_top_up, pool_after, ledger_seq - 1000000, leaf_index - 1000000 FROM moved)"
        " SELECT id FROM moved",
        "wins",
    ),
    "a suspension's reason rewritten": (
        "UPDATE pool_lifecycle SET reason = 'routine'"
        " WHERE id = (SELECT min(id) FROM pool_lifecycle WHERE action = 'suspend') RETURNING id",
        "pool_lifecycle",
    ),
    "a scheduled change's seed rewritten": (
        "UPDATE pool_lifecycle SET pending = pending || '{\"seed_amount\": 1}'"
        " WHERE id = (SELECT min(id) FROM pool_lifecycle WHERE action = 'schedule_config')"
        " RETURNING id",
        "pool_lifecycle",
    ),
    "a resumption deleted": (
        "DELETE FROM pool_lifecycle"
        " WHERE id = (SELECT min(id) FROM pool_lifecycle WHERE action = 'resume') RETURNING id",
        "pool_lifecycle",
    ),
    "a lifecycle row inserted without a leaf index": (
        "INSERT INTO pool_lifecycle (jackpot_group, action, client, leaf_index)"
        " VALUES ('mega', 'suspend', 'ops', NULL) RETURNING id",
        "pool_lifecycle",
    ),
    "a row's leaf index changed": (
        "UPDATE contributions SET leaf_index = leaf_index + 1000000"
        " WHERE id = (SELECT max(id) - 2 FROM contributions) RETURNING id",
        "contributions",
    ),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edit_before_a_checkpoint_fails_the_audit_naming_the_row(
    edit: str,
    sealed: Sealed,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    statement, table = EDITS[edit]
    row_id = insider(sealed.url, statement)
    assert row_id is not None
    code, report = audit(monkeypatch, capsys, sealed)
    assert report["ok"] is False
    assert (report["first_bad"]["table"], report["first_bad"]["id"]) == (table, row_id)
    assert code == 1


def test_a_pool_moved_without_a_row_fails_naming_the_pool(
    sealed: Sealed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    insider(sealed.url, "UPDATE jackpots SET current_amount = current_amount + 1"
            " WHERE jackpot_group = 'mega'")  # fmt: skip
    code, report = audit(monkeypatch, capsys, sealed)
    assert (report["first_bad"]["table"], report["first_bad"]["id"]) == ("jackpots", "mega")
    assert code == 1


def test_a_row_deleted_before_it_became_a_leaf_fails_naming_the_ledger_head(
    sealed: Sealed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pending contribution (after the last checkpoint) claimed its leaf index when it
    was written: deleting it leaves the head past the rows."""
    insider(sealed.url, "DELETE FROM contributions WHERE id = (SELECT max(id) FROM contributions)")
    code, report = audit(monkeypatch, capsys, sealed)
    assert ("ledger_head", "size") in {(f["table"], f["id"]) for f in report["findings"]}
    assert code == 1


def test_leaves_cut_from_the_end_fail_naming_the_checkpoint(
    sealed: Sealed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    insider(sealed.url, "DELETE FROM ledger_leaves WHERE leaf_index >="
            " (SELECT max(leaf_index) - 2 FROM ledger_leaves)")  # fmt: skip
    code, report = audit(monkeypatch, capsys, sealed)
    assert report["ok"] is False
    assert {f["table"] for f in report["findings"]} >= {"checkpoints"}
    assert code == 1


def test_an_edited_checkpoint_file_fails(
    sealed: Sealed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = sealed.log.read_text()
    first_mega = text.index("pool mega ")
    end = text.index("\n", first_mega)
    amount = int(text[first_mega + len("pool mega ") : end])
    sealed.log.write_text(text[:first_mega] + f"pool mega {amount + 1}" + text[end:])
    code, report = audit(monkeypatch, capsys, sealed)
    assert report["first_bad"]["table"] == "checkpoints" and report["first_bad"]["id"] == 1
    assert "does not verify" in report["first_bad"]["problem"]
    assert code == 1


def test_a_checkpoint_is_not_signed_over_changed_books(
    sealed: Sealed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    insider(sealed.url, "UPDATE ledger_leaves SET leaf_hash = sha256(leaf_hash)"
            " WHERE leaf_index = 3")  # fmt: skip
    before = sealed.log.read_text()
    assert run(monkeypatch, sealed, "ledger", "checkpoint") == 1
    assert "no longer matches" in capsys.readouterr().err
    assert sealed.log.read_text() == before


def test_an_incremental_audit_rebuilds_only_the_leaves_after_the_checkpoint_it_trusts(
    sealed: Sealed,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / "audited.json"
    code, first = audit(monkeypatch, capsys, sealed, "--state", str(state))
    assert code == 0 and first["rebuilt_from"] == 0
    proved = json.loads(state.read_text())["size"]
    assert proved == first["latest_checkpoint_size"]
    at_second = tmp_path / "at-second.json"
    at_second.write_text(state.read_text())

    # The pending contribution becomes leaf `proved`, under a third checkpoint.
    assert run(monkeypatch, sealed, "ledger", "checkpoint") == 0
    code, second = audit(monkeypatch, capsys, sealed, "--state", str(state))
    assert (second["rebuilt_from"], second["leaves"]) == (proved, proved + 1)
    assert code == 0 and json.loads(state.read_text())["size"] == proved + 1

    # From the second checkpoint, an edit of the leaf after it is found; an edit before it
    # is left to the full rebuild (the incremental audit took those rows as proved).
    newest = insider(
        sealed.url,
        "UPDATE contributions SET game_id = 'x' WHERE id = (SELECT max(id) FROM contributions)"
        " RETURNING id",
    )
    oldest = insider(sealed.url, "UPDATE wins SET game_id = 'x' WHERE id = 1 RETURNING id")
    code, third = audit(monkeypatch, capsys, sealed, "--state", str(at_second))
    assert third["rebuilt_from"] == proved
    assert {(f["table"], f["id"]) for f in third["findings"] if f["leaf_index"] is not None} == {
        ("contributions", newest)
    }
    assert code == 1
    _, full = audit(monkeypatch, capsys, sealed, "--state", str(at_second), "--full")
    assert full["rebuilt_from"] == 0
    assert {("wins", oldest), ("contributions", newest)} <= {
        (f["table"], f["id"]) for f in full["findings"]
    }


def test_a_state_no_signed_checkpoint_vouches_for_is_not_trusted(
    sealed: Sealed,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / "audited.json"
    assert audit(monkeypatch, capsys, sealed, "--state", str(state))[0] == 0
    forged = json.loads(state.read_text())
    # A consistent state of another tree: its last subtree swapped, its root recomputed.
    nodes = [(count, bytes.fromhex(node)) for count, node in forged["frontier"]]
    nodes[-1] = (nodes[-1][0], b"\x11" * 32)
    forged["frontier"] = [[count, node.hex()] for count, node in nodes]
    forged["root"] = Frontier.from_nodes(nodes).root().hex()
    state.write_text(json.dumps(forged))
    insider(sealed.url, "UPDATE wins SET game_id = 'x' WHERE id = 1")
    code, report = audit(monkeypatch, capsys, sealed, "--state", str(state))
    assert code == 1 and report["rebuilt_from"] == 0
    assert ("wins", 1) in {(f["table"], f["id"]) for f in report["findings"]}


async def _every_lifecycle_shape(url: str) -> None:
    """Scheduled changes setting every field a pool_lifecycle leaf has: a seed with the cap
    removed, a rate with a new cap (the traffic schedules a rate alone)."""
    async with AsyncConnectionPool(url, min_size=1, max_size=1, open=False) as pool:
        await pool.open(wait=True, timeout=10)
        service = JackpotService(pool)
        await service.update_config(
            change(Group.MAJOR, seed_amount=123_456, clear_max_amount=True, apply_at_next_win=True),
            client="test",
        )
        await service.update_config(
            change(
                Group.MEGA,
                contribution_rate=Decimal("0.0011"),
                max_amount=98_765_432,
                apply_at_next_win=True,
            ),
            client="test",
        )


async def _every_reserve_shape(url: str) -> None:
    """Rows with the reserve and overflow extension fields set (migration 0014): a reserve
    rate and a divert, contributions past the cap (overflow diverted, and kept while the
    target is suspended), a reset paid from the reserve and by the operator (a seed-funding
    row per source), and changes, immediate and scheduled, setting the reserve rate,
    overflow policy and target."""
    async with AsyncConnectionPool(url, min_size=1, max_size=1, open=False) as pool:
        await pool.open(wait=True, timeout=10)
        service = JackpotService(pool)
        minor = (await service.config())[0]
        await service.update_config(
            change(
                Group.MINOR,
                reserve_rate=Decimal("0.0123"),
                max_amount=minor.seed_amount + 2_000,
                overflow_target=Group.MAJOR,
            ),
            client="test",
        )
        game = random_game_id()
        await service.contribute_many([contribute(game, w) for w in (500_000, 400_000)])
        await service.set_suspended(Group.MAJOR, True, "test", "reserve shapes", "test")
        await service.contribute_many([contribute(game, 300_000)])  # kept on minor's meter
        await service.set_suspended(Group.MAJOR, False, "test", "", "test")
        await service.win(  # a whole-pool win: reset from the reserve, the rest by the operator
            WinCommand(Group.MINOR, game, random_user_id(), None, random_key(), "game-a")
        )
        await service.update_config(
            change(
                Group.MEGA,
                reserve_rate=Decimal("0.0007"),
                overflow_policy=OverflowPolicy.DIVERT,
                overflow_target=Group.MAJOR,
                apply_at_next_win=True,
            ),
            client="test",
        )
        await service.update_config(
            change(Group.MINOR, overflow_policy=OverflowPolicy.ACCUMULATE), client="test"
        )


def test_postgresql_encodes_every_leaf_as_the_reference_encoder_does(sealed: Sealed) -> None:
    """The signer has PostgreSQL encode and hash new leaves (ledger_store.leaf_sql); every
    row of real traffic, of every event type, gives the bytes ledger/leaf.py gives: rows
    with and without the extension fields (reserve, overflow, seed source) among them."""
    asyncio.run(_every_lifecycle_shape(sealed.url))
    asyncio.run(_every_reserve_shape(sealed.url))
    compared: dict[str, int] = {}
    pending: set[tuple[str, ...]] = set()
    shapes: set[str] = set()
    with psycopg.connect(sealed.url) as conn, conn.cursor(row_factory=dict_row) as cur:
        for table in ledger_store.TABLES:
            cur.execute(
                f"SELECT t.*, {ledger_store.leaf_sql(table)} AS leaf_bytes"
                f" FROM {table} t WHERE leaf_index IS NOT NULL"
            )
            for row in cur.fetchall():
                leaf = bytes(row.pop("leaf_bytes"))
                assert leaf == leaf_of(table, row, row["leaf_index"]), (table, row["id"])
                compared[table] = compared.get(table, 0) + 1
                if table == "pool_lifecycle":
                    pending.add((row["action"], *sorted(row["pending"] or {})))
                shapes.update(_extension_shapes(table, row))
    assert sum(compared.values()) > 30 and set(compared) == set(ledger_store.TABLES)
    assert pending == {
        ("suspend",),
        ("resume",),
        ("schedule_config", "clear_max_amount", "contribution_rate"),
        ("schedule_config", "clear_max_amount", "seed_amount"),
        ("schedule_config", "clear_max_amount", "contribution_rate", "max_amount"),
        (
            "schedule_config",
            "clear_max_amount",
            "overflow_policy",
            "overflow_target",
            "reserve_rate",
        ),
    }
    assert shapes == {
        "contribution with a reserve",
        "contribution diverting overflow",
        "contribution keeping overflow",
        "win reset from the reserve",
        "seed funding by the operator",
        "seed funding from the reserve",
        "config change of the reserve and overflow",
        "schedule without the extension",
    }


def _extension_shapes(table: str, row: dict[str, Any]) -> set[str]:
    """Which of the extension's cases a row is (the equality test must meet each)."""
    found: set[str] = set()
    if table == "contributions":
        if row["minor_reserve"]:
            found.add("contribution with a reserve")
        if row["minor_overflow"] and row["minor_overflow_to"] == "major":
            found.add("contribution diverting overflow")
        if row["minor_overflow"] and row["minor_overflow_to"] == "minor":
            found.add("contribution keeping overflow")
    if table == "wins" and row["reserve_top_up"]:
        found.add("win reset from the reserve")
    if table == "seed_fundings":
        source = row["source"]
        kind = "by the operator" if source == "operator" else "from the reserve"
        found.add(f"seed funding {kind if source else 'without a source'}")
    if table == "config_audit" and row["after"].get("overflow_target") == "major":
        found.add("config change of the reserve and overflow")
    if table == "pool_lifecycle" and row["pending"] and "reserve_rate" not in row["pending"]:
        found.add("schedule without the extension")
    return found


def test_with_state_the_books_audit_is_incremental_too(
    sealed: Sealed,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--state also keeps where the books were found clean: the next audit re-proves only
    the rows since (rows_from), and an edit among them is found; --full re-proves all."""
    state = tmp_path / "audited.json"

    def books(*options: str) -> tuple[int, dict[str, Any]]:
        capsys.readouterr()
        argv = ["audit", "--json", "--checkpoints", str(sealed.log)]
        argv += ["--public-key", str(sealed.public_key), "--state", str(state), *options]
        code = run(monkeypatch, sealed, *argv)
        return code, json.loads(capsys.readouterr().out)

    code, first = books()
    assert code == 0 and first["rows_from"] is None
    head = json.loads(state.read_text())["books"]["head"]
    asyncio.run(real_traffic(sealed.url))  # every kind of row, after the books' base
    assert run(monkeypatch, sealed, "ledger", "checkpoint") == 0
    code, second = books()
    assert code == 0 and second["rows_from"] == head and second["balanced"] is True
    head = json.loads(state.read_text())["books"]["head"]
    asyncio.run(real_traffic(sealed.url))  # rows since the second audit (no checkpoint yet)
    newer = insider(
        sealed.url,
        "UPDATE contributions SET minor_rate = minor_rate * 3 WHERE leaf_index ="
        f" (SELECT max(leaf_index) FROM contributions WHERE leaf_index >= {head}) RETURNING id",
    )
    assert newer is not None
    code, third = books()
    assert code == 1 and third["rows_from"] == head
    assert ("contributions", newer) in {(r["table"], r["id"]) for r in third["rows"]["bad"]}
    code, full = books("--full")
    assert code == 1 and full["rows_from"] is None
