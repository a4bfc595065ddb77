"""The books, checked from outside the service: the ledger against what callers were told,
every pool against its ledgers, and `jackpot audit` as an operator runs it.

`check_contributions` and `check_books` hold the promise the reliability tests test: every
acknowledged key is in the ledger exactly once, every answer for one key is the same
answer, and every pool balances against its ledger.
"""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from jackpot.v1 import jackpot_pb2 as pb

from testkit.calls import Call, amounts, answer
from testkit.paths import PROJECT_ROOT
from testkit.processes import clean_env, jackpot_executable


@dataclass
class LedgerRow:
    id: int
    key: str | None
    wager: int
    amounts: tuple[int, int, int]


def ledger_rows(url: str) -> list[LedgerRow]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT id, idempotency_key, wager_amount, minor_amount, major_amount, mega_amount
               FROM contributions ORDER BY id"""
        ).fetchall()
    return [LedgerRow(r[0], r[1], r[2], (r[3], r[4], r[5])) for r in rows]


@dataclass
class ContributionCheck:
    """What the ledger and the callers' answers say, once reconciled."""

    ledger_rows: int
    keyed_rows: int
    keyless_rows: int
    acknowledged_keys: int
    acknowledged_keyless: int
    answers: int
    replayed_answers: int
    in_doubt_keys: int = 0
    in_doubt_committed: int = 0
    problems: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if k != "problems"}


def check_contributions(
    url: str,
    calls: Iterable[Call],
    *,
    extra_answers: Iterable[tuple[str | None, pb.ContributeResponse]] = (),
    all_keys_acknowledged: bool = True,
    allow_unacknowledged_keyless: bool = False,
    faults: bool = False,
) -> ContributionCheck:
    """Reconcile every answer callers got with the contributions ledger.

    - every acknowledged key is in the ledger exactly once, with the amounts it was told;
    - every answer for one key is the same answer (same contribution_id, amounts, pools);
    - at most one answer per key is not a replay (exactly one when nothing failed);
    - the ledger holds no key nobody sent, and no more keyless rows than were acknowledged
      (unless keyless calls may have committed without an answer);
    - the acknowledged amounts per group sum to the ledger's sums.
    `extra_answers` are (key, response) pairs from ContributeBatch items.
    """
    rows = ledger_rows(url)
    problems: list[str] = []
    by_key: dict[str, list[LedgerRow]] = defaultdict(list)
    for row in rows:
        if row.key is not None:
            by_key[row.key].append(row)
    by_id = {row.id: row for row in rows}

    answers: dict[str | None, list[pb.ContributeResponse]] = defaultdict(list)
    attempted: set[str] = set()
    failed_keys: set[str] = set()
    for call in calls:
        if call.key is not None:
            attempted.add(call.key)
        if call.ok:
            assert call.response is not None
            answers[call.key].append(call.response)
        elif call.key is not None:
            failed_keys.add(call.key)
    for key, response in extra_answers:
        if key is not None:
            attempted.add(key)
        answers[key].append(response)

    keyless = answers.pop(None, [])
    for key in sorted(attempted):
        got = answers.get(key, [])
        in_ledger = by_key.get(key, [])
        if len(in_ledger) > 1:
            problems.append(f"key {key!r} is in the ledger {len(in_ledger)} times")
        if not got:
            if all_keys_acknowledged:
                problems.append(f"key {key!r} was never acknowledged")
            continue
        if len(in_ledger) != 1:
            problems.append(f"acknowledged key {key!r} is in the ledger {len(in_ledger)} times")
            continue
        row = in_ledger[0]
        if len({answer(r) for r in got}) != 1:
            problems.append(f"key {key!r} got {len({answer(r) for r in got})} different answers")
        first = got[0]
        if first.contribution_id != row.id or amounts(first) != row.amounts:
            problems.append(
                f"key {key!r} was told id {first.contribution_id} {amounts(first)},"
                f" the ledger has id {row.id} {row.amounts}"
            )
        fresh = sum(1 for r in got if not r.replayed)
        if fresh > 1 or (fresh == 0 and not faults):
            problems.append(f"key {key!r} got {fresh} first (not replayed) answers")
    unknown = sorted(set(by_key) - attempted)
    if unknown:
        problems.append(f"{len(unknown)} ledger keys nobody sent, e.g. {unknown[:3]}")

    keyless_rows = sum(1 for row in rows if row.key is None)
    keyless_ids = [r.contribution_id for r in keyless]
    if len(set(keyless_ids)) != len(keyless_ids):
        problems.append("two keyless calls were told the same contribution_id")
    for response in keyless:
        found = by_id.get(response.contribution_id)
        if found is None or found.key is not None or found.amounts != amounts(response):
            problems.append(f"keyless answer id {response.contribution_id} is not in the ledger")
    if keyless_rows < len(keyless) or (
        keyless_rows > len(keyless) and not allow_unacknowledged_keyless
    ):
        problems.append(f"{keyless_rows} keyless ledger rows for {len(keyless)} keyless answers")

    acknowledged = {k: v for k, v in answers.items() if v}
    if not allow_unacknowledged_keyless and all_keys_acknowledged:
        if len(rows) != len(acknowledged) + len(keyless):
            problems.append(
                f"{len(rows)} ledger rows for {len(acknowledged)} acknowledged keys"
                f" + {len(keyless)} keyless calls"
            )
        told = [amounts(v[0]) for v in acknowledged.values()] + [amounts(r) for r in keyless]
        told_sums = tuple(sum(a[i] for a in told) for i in range(3))
        ledger_sums = tuple(sum(r.amounts[i] for r in rows) for i in range(3))
        if told_sums != ledger_sums:
            problems.append(f"acknowledged sums {told_sums} != ledger sums {ledger_sums}")

    in_doubt = failed_keys & set(acknowledged)
    committed_before = {
        k for k in in_doubt if all(r.replayed for r in acknowledged[k])
    }  # the failed attempt had in fact committed; the retry replayed it
    return ContributionCheck(
        ledger_rows=len(rows),
        keyed_rows=len(rows) - keyless_rows,
        keyless_rows=keyless_rows,
        acknowledged_keys=len(acknowledged),
        acknowledged_keyless=len(keyless),
        answers=sum(len(v) for v in acknowledged.values()) + len(keyless),
        replayed_answers=sum(1 for v in acknowledged.values() for r in v if r.replayed),
        in_doubt_keys=len(in_doubt),
        in_doubt_committed=len(committed_before),
        problems=problems,
    )


def check_books(url: str) -> list[str]:
    """An audit independent of the service's own query: every pool against its ledgers,
    every win against its seed top-up. Returns the problems found (none when balanced)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return books_problems(conn)


def books_problems(conn: psycopg.Connection[Any]) -> list[str]:
    """check_books on an open autocommit connection (one consistent snapshot)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        pools = conn.execute(
            """SELECT j.jackpot_group, j.current_amount, j.total_contributions, j.total_wins,
                      j.total_seed_funding,
                      (SELECT coalesce(sum(s.amount), 0) FROM seed_fundings s
                        WHERE s.jackpot_group = j.jackpot_group),
                      (SELECT coalesce(sum(CASE j.jackpot_group
                                WHEN 'minor' THEN c.minor_amount
                                WHEN 'major' THEN c.major_amount
                                ELSE c.mega_amount END), 0) FROM contributions c),
                      (SELECT coalesce(sum(w.amount), 0) FROM wins w
                        WHERE w.jackpot_group = j.jackpot_group),
                      j.win_count,
                      (SELECT count(*) FROM wins w WHERE w.jackpot_group = j.jackpot_group)
               FROM jackpots j ORDER BY j.lock_order"""
        ).fetchall()
        wins = conn.execute(
            """SELECT count(*) FROM wins w
               WHERE w.pool_after <> w.pool_before - w.amount + w.seed_top_up
                  OR w.seed_top_up <> coalesce(
                         (SELECT sum(s.amount) FROM seed_fundings s WHERE s.win_id = w.id), 0)"""
        ).fetchone()
    problems = []
    for group, current, t_contrib, t_wins, t_seed, seed, contrib, won, n_wins, wins_n in pools:
        if current != seed + contrib - won:
            problems.append(f"{group}: current {current} != {seed} + {contrib} - {won}")
        if (t_contrib, t_wins, t_seed) != (contrib, won, seed):
            problems.append(
                f"{group}: totals {(t_contrib, t_wins, t_seed)} != ledger {(contrib, won, seed)}"
            )
        if n_wins != wins_n:
            problems.append(f"{group}: win_count {n_wins} != {wins_n} win rows")
    assert wins is not None
    if wins[0]:
        problems.append(f"{wins[0]} win rows whose pool_after or seed top-up does not add up")
    return problems


def table_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            """SELECT (SELECT count(*) FROM contributions), (SELECT count(*) FROM wins),
                      (SELECT count(*) FROM seed_fundings), (SELECT count(*) FROM config_audit)"""
        ).fetchone()
    assert row is not None
    return dict(zip(("contributions", "wins", "seed_fundings", "config_audit"), row, strict=True))


def cli_audit(database_url: str) -> tuple[int, dict[str, Any]]:
    """`jackpot audit --json` against the database: (exit code, its report)."""
    env = {**clean_env(), "DATABASE_URL": database_url, "OTEL_SDK_DISABLED": "true"}
    done = subprocess.run(
        [*jackpot_executable(), "audit", "--json"],
        env=env,
        capture_output=True,
        timeout=60,
        cwd=PROJECT_ROOT,
        check=False,
    )
    try:
        parsed: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        parsed = {"stdout": done.stdout.decode(errors="replace"), "stderr": done.stderr.decode()}
    return done.returncode, parsed
