"""The audit scenario of `make bench`: how long `jackpot audit` takes per million ledger rows.

A scratch database is filled with N contributions in one generate_series insert: rows as
the batch path writes them (shares of floor(wager × rate), the rates, the shared ledger
sequence, a chain of `*_after` amounts), the pools and totals moved to match, so the audit
does all its work and must find the books balanced. Then the audit the CLI runs is timed
end to end (the query and the report), the best of a few runs.

Then the tamper-evident ledger's costs on the same rows (docs/LEDGER.md): signing the first
checkpoint gives every new row its leaf (encoded, hashed, appended), so it is the cost per
million new rows; the audit against that checkpoint re-encodes and re-hashes every row, the
cost per million rows of a full rebuild.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.adapters import books_audit
from jackpot_grpc.adapters.unit_of_work import Isolation, transaction
from jackpot_grpc.config import Settings
from jackpot_grpc.domain.model import AuditBase, LedgerAudit
from jackpot_grpc.ledger.note import Signer
from jackpot_grpc.service.ledger_books import audit_against_checkpoints, sign_checkpoint
from jackpot_grpc.service.reports import run_audit

WAGER = 1000

# N contributions of WAGER at the default pools' rates (migration 0001), so shares of 5, 3
# and 2, each row's `*_after` the pool's amount plus i shares; ledger_seq is drawn in row
# order, and the leaf indexes are claimed from the ledger head once, as the batch path does.
FILL = """WITH claimed AS (
        UPDATE ledger_head SET size = size + %(n)s RETURNING size - %(n)s AS first_leaf)
    INSERT INTO contributions (client, game_id, wager_amount,
        minor_amount, minor_after, minor_rate, major_amount, major_after, major_rate,
        mega_amount, mega_after, mega_rate, leaf_index)
    SELECT 'bench-audit', 'bench-audit', %(wager)s,
        5, mi.current_amount + 5 * i, 0.005, 3, ma.current_amount + 3 * i, 0.003,
        2, me.current_amount + 2 * i, 0.002, claimed.first_leaf + i - 1
    FROM generate_series(1, %(n)s) AS i, claimed,
        (SELECT current_amount FROM jackpots WHERE jackpot_group = 'minor') mi,
        (SELECT current_amount FROM jackpots WHERE jackpot_group = 'major') ma,
        (SELECT current_amount FROM jackpots WHERE jackpot_group = 'mega') me
    ORDER BY i"""
MOVE_POOLS = """UPDATE jackpots SET
    current_amount = current_amount + %(n)s * s.share,
    total_contributions = total_contributions + %(n)s * s.share,
    total_contributed = total_contributed + %(n)s * s.share,
    contribution_count = contribution_count + %(n)s
    FROM (VALUES ('minor', 5), ('major', 3), ('mega', 2)) AS s(grp, share)
    WHERE jackpot_group = s.grp"""
MOVE_TOTALS = """UPDATE contribution_totals
    SET contribution_count = contribution_count + %(n)s::bigint,
        total_wagered = total_wagered + %(n)s::bigint * %(wager)s::bigint"""


def fill_ledger(url: str, rows: int) -> None:
    """`rows` more valid contributions after the pools' amounts, caps lifted so none is cut."""
    params = {"n": rows, "wager": WAGER}
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("UPDATE jackpots SET max_amount = NULL")
            conn.execute(FILL, params)
            conn.execute(MOVE_POOLS, params)
            conn.execute(MOVE_TOTALS, params)
        conn.execute("VACUUM ANALYZE")


def audit_once(url: str) -> tuple[float, LedgerAudit]:
    defaults = Settings.from_env({})
    small = dataclasses.replace(defaults.database, pool_min_size=1, pool_max_size=2)
    settings = dataclasses.replace(defaults, database=small)
    started = time.perf_counter()
    books = asyncio.run(run_audit(settings, url))
    return time.perf_counter() - started, books


async def _arithmetic(url: str, base: AuditBase | None) -> tuple[float, LedgerAudit, Any]:
    """The background audit's query (books_audit.audit_ledger_from): full, or from `base`."""
    async with AsyncConnectionPool(url, min_size=1, max_size=1, open=False) as pool:
        await pool.open(wait=True, timeout=30)
        started = time.perf_counter()
        async with transaction(pool, isolation=Isolation.REPEATABLE_READ) as conn:
            books, after = await books_audit.audit_ledger_from(conn, base)
        return time.perf_counter() - started, books, after


def per_million(seconds: float, rows: int) -> float:
    return round(seconds * 1_000_000 / max(rows, 1), 2)


def checkpoint_costs(url: str, ledger_rows: int, more_rows: int) -> dict[str, Any]:
    """Seconds to give `ledger_rows` new rows their leaves and sign; to audit them all
    against the checkpoint (a full rebuild); then, after `more_rows` more rows and another
    checkpoint, the incremental audits: against the checkpoints from the state the first
    left, and the background audit's query from its base."""
    signer = Signer.generate("bench-ledger")
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "checkpoints.log"
        started = time.perf_counter()
        signed = sign_checkpoint(url, signer, log)
        sign_s = time.perf_counter() - started
        started = time.perf_counter()
        result, state = audit_against_checkpoints(url, log.read_text(), signer.verifier.text())
        rebuild_s = time.perf_counter() - started
        _, _, base = asyncio.run(_arithmetic(url, None))
        fill_ledger(url, more_rows)
        started = time.perf_counter()
        more = sign_checkpoint(url, signer, log)
        sign_more_s = time.perf_counter() - started
        started = time.perf_counter()
        incremental, _ = audit_against_checkpoints(
            url, log.read_text(), signer.verifier.text(), state
        )
        incremental_s = time.perf_counter() - started
        arithmetic_s, books, _ = asyncio.run(_arithmetic(url, base))
    return {
        "new_leaves": signed.new_leaves,
        "checkpoint_s": round(sign_s, 3),
        "seconds_per_million_new_rows": per_million(sign_s, signed.new_leaves),
        "rebuild_s": round(rebuild_s, 3),
        "seconds_per_million_rows_rebuilt": per_million(rebuild_s, ledger_rows),
        "matches_checkpoint": result.ok and incremental.ok,
        "more_rows": more.new_leaves,
        "checkpoint_more_s": round(sign_more_s, 3),
        "incremental_audit_s": round(incremental_s, 3),
        "incremental_rebuilt_from": incremental.started_at,
        "incremental_seconds_per_million_new_rows": per_million(incremental_s, more.new_leaves),
        "arithmetic_incremental_s": round(arithmetic_s, 3),
        "arithmetic_incremental_seconds_per_million_new_rows": per_million(
            arithmetic_s, more.new_leaves
        ),
        "arithmetic_incremental_balanced": books.balanced,
    }


def measure(url: str, rows: int, repeats: int = 3) -> dict[str, Any]:
    """Fill `url` (a fresh, migrated database) with `rows` contributions and time the audit."""
    started = time.perf_counter()
    fill_ledger(url, rows)
    fill_s = time.perf_counter() - started
    runs = [audit_once(url) for _ in range(repeats)]
    best = min(seconds for seconds, _ in runs)
    books = runs[-1][1]
    # Every ledger row the audit re-proves: the contributions and the three initial seeds.
    ledger_rows = rows + 3
    return {
        "contributions": rows,
        "ledger_rows": ledger_rows,
        "fill_s": round(fill_s, 2),
        "audit_s": [round(seconds, 3) for seconds, _ in runs],
        "best_audit_s": round(best, 3),
        "seconds_per_million_rows": round(best * 1_000_000 / ledger_rows, 2),
        "balanced": books.balanced,
        "problems": books.problems()[:5],
        "ledger_proofs": checkpoint_costs(url, ledger_rows, max(rows // 10, 1)),
    }


def summary(result: dict[str, Any]) -> str:
    verdict = "books balance" if result["balanced"] else "BOOKS DO NOT BALANCE"
    line = (
        f"audit of {result['ledger_rows']:,} ledger rows: {result['best_audit_s']:.2f} s"
        f" (best of {len(result['audit_s'])}), {result['seconds_per_million_rows']:.2f} s"
        f" per million rows; {verdict}"
    )
    proofs = result.get("ledger_proofs")
    if proofs:
        line += (
            f"\nledger proofs: {proofs['seconds_per_million_new_rows']:.2f} s per million new"
            f" rows (leaves and a checkpoint), {proofs['seconds_per_million_rows_rebuilt']:.2f} s"
            " per million rows for a full rebuild against it"
            + ("" if proofs["matches_checkpoint"] else "; ROWS DO NOT MATCH THE CHECKPOINT")
            + f"\nincremental, {proofs['more_rows']:,} rows later:"
            f" {proofs['incremental_seconds_per_million_new_rows']:.2f} s per million new rows"
            " against the checkpoints (from the state the full audit left),"
            f" {proofs['arithmetic_incremental_seconds_per_million_new_rows']:.2f} s per million"
            " new rows for the background audit's query from its base"
            + ("" if proofs["arithmetic_incremental_balanced"] else "; BOOKS DO NOT BALANCE")
        )
    return line
