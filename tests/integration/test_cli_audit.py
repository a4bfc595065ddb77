"""`jackpot audit`: a table and exit 0 when the books balance, exit 1 naming the pool when not."""

from __future__ import annotations

import json

import psycopg
import pytest

from jackpot_grpc.cli import main

pytestmark = pytest.mark.usefixtures("keep_logging")


def audit(monkeypatch: pytest.MonkeyPatch, database_url: str, *args: str) -> int:
    monkeypatch.setenv("DATABASE_URL", database_url)
    return main(["audit", *args])


def test_audit_passes_then_catches_money_without_a_ledger_entry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    assert audit(monkeypatch, database_url) == 0
    assert capsys.readouterr().out.strip().endswith("books balance")

    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE jackpots SET current_amount = current_amount + 7 WHERE jackpot_group = 'mega'"
        )
    assert audit(monkeypatch, database_url) == 1
    table = capsys.readouterr().out
    mega = next(line for line in table.splitlines() if line.startswith("mega"))
    assert mega.split()[-2:] == ["7", "MISMATCH"]
    assert "BOOKS DO NOT BALANCE" in table

    assert audit(monkeypatch, database_url, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["balanced"] is False
    assert {p["group"]: p["discrepancy"] for p in report["pools"]} == {
        "minor": 0,
        "major": 0,
        "mega": 7,
    }


def test_audit_catches_a_ledger_row_the_contribution_totals_do_not_count(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:  # a zero-share row: every pool still balances
        conn.execute(
            "INSERT INTO contributions (client, game_id, wager_amount, minor_amount,"
            " major_amount, mega_amount, minor_after, major_after, mega_after)"
            " VALUES ('stray', 'stray', 500, 0, 0, 0, 0, 0, 0)"
        )
    assert audit(monkeypatch, database_url) == 1
    out = capsys.readouterr().out
    assert "MISMATCH: contribution totals record 0 rows and 0 wagered;" in out
    assert "the ledger has 1 and 500" in out and "BOOKS DO NOT BALANCE" in out

    assert audit(monkeypatch, database_url, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert all(p["balanced"] for p in report["pools"])
    assert report["contribution_totals"] == {
        "contribution_count": 1,
        "recorded_contribution_count": 0,
        "total_wagered": 500,
        "recorded_total_wagered": 0,
        "balanced": False,
    }
