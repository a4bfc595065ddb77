"""The sealed ledger the checkpoint tests tamper with: its paths, the CLI run against it,
and an insider's statement past the append-only triggers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jackpot_grpc.cli import main


@dataclass
class Sealed:
    url: str
    key: Path
    public_key: Path
    log: Path


def run(monkeypatch: pytest.MonkeyPatch, sealed: Sealed, *argv: str) -> int:
    monkeypatch.setenv("DATABASE_URL", sealed.url)
    monkeypatch.setenv("JACKPOT_LEDGER_KEY_FILE", str(sealed.key))
    monkeypatch.setenv("JACKPOT_CHECKPOINT_LOG", str(sealed.log))
    return main(list(argv))


def audit(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sealed: Sealed,
    *options: str,
) -> tuple[int, dict[str, Any]]:
    """`jackpot audit --json --checkpoints … --public-key …` (and `options`): the exit code
    and the report's checkpoints part."""
    capsys.readouterr()
    code = run(
        monkeypatch,
        sealed,
        "audit",
        "--json",
        "--checkpoints",
        str(sealed.log),
        "--public-key",
        str(sealed.public_key),
        *options,
    )
    report = json.loads(capsys.readouterr().out)
    return code, report["checkpoints"]


def insider(url: str, statement: str) -> Any:
    """One statement past the append-only triggers (a superuser can); its first value."""
    with psycopg.connect(url) as conn:
        conn.execute("SET session_replication_role = replica")
        cur = conn.execute(statement)
        while cur.nextset():  # several statements: the last one's answer
            pass
        row = cur.fetchone() if cur.description else None
        return row[0] if row else None
