"""The floor of the ledger signer's cost per row: what encoding and hashing one leaf cost at
the least, with nothing stored or read back (BENCHMARKS.md, docs/LEDGER.md).

Run on the audit scenario's database (its contributions are rows as the batch path writes
them). Each PostgreSQL probe is one aggregate over every contribution, on one backend with
parallel query and JIT off (a parallel worker's CPU is not the backend's), priced by the
backend's CPU (psutil) less a plain scan of the same rows; the best of a few runs. The
tree's own Python side is priced with `time.process_time`: the bare SHA-256 call of a
node hash and merkle.Frontier.extend per leaf (what the signer runs).

`make bench` compares the floor with the ledger A/B's budget: 5 % of a ContributeBatch
item's server + PostgreSQL CPU in the run without signing.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

import psutil
import psycopg

from jackpot_grpc.adapters.ledger_store import field_texts_sql, leaf_sql
from jackpot_grpc.ledger import merkle

RUNS = 3
PYTHON_LEAVES = 100_000  # leaves (and node hashes) per timed run of the Python side
BUDGET_SHARE = 0.05  # the goal: within 5 % of the run without hashing

_LEAF = leaf_sql("contributions")
# Every probe is an aggregate over all contributions, so each reads the same rows.
SCAN = "SELECT count(id) FROM contributions"
PROBES: dict[str, str] = {
    "field_texts": (
        f"SELECT sum(length(concat({field_texts_sql('contributions')}))) FROM contributions"  # noqa: S608
    ),
    "encode": f"SELECT sum(length({_LEAF})) FROM contributions",  # noqa: S608
    "encode_and_leaf_hash": (
        f"SELECT sum(length(pg_catalog.sha256('\\x00'::bytea || {_LEAF}))) FROM contributions"  # noqa: S608
    ),
}
# The leaf hash alone, over the leaves' bytes kept in a temporary table, less its scan.
LEAF_BYTES = (
    f"CREATE TEMP TABLE floor_leaves AS SELECT '\\x00'::bytea || {_LEAF} AS b FROM contributions"  # noqa: S608
)
HASH_ONLY = "SELECT sum(length(pg_catalog.sha256(b))) FROM floor_leaves"
SCAN_ONLY = "SELECT sum(length(b)) FROM floor_leaves"


def _backend_cpu(pid: int) -> float:
    """A local backend's CPU seconds (user + system)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _best_cpu(conn: psycopg.Connection[Any], sql: str) -> float:
    """The least backend CPU of RUNS runs of `sql`, repeated within a run until it has used
    at least 0.3 s (the clock ticks in hundredths)."""
    pid = conn.info.backend_pid
    best = float("inf")
    for _ in range(RUNS):
        times, start = 0, _backend_cpu(pid)
        while True:
            conn.execute(sql).fetchone()
            times += 1
            used = _backend_cpu(pid) - start
            if used >= 0.3 or times >= 50:
                break
        best = min(best, used / times)
    return best


def _python_cpu(fn: Callable[[], object]) -> float:
    """The least CPU seconds of RUNS calls of `fn` in this process."""
    best = float("inf")
    for _ in range(RUNS):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def _us(seconds: float, rows: int) -> float:
    """Microseconds per row (never below zero: a step cheaper than the clock's tick)."""
    return round(1e6 * max(seconds, 0.0) / rows, 3)


def measure(url: str) -> dict[str, Any]:
    """Microseconds of CPU per row for each step of a leaf, at its floor."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")
        conn.execute("SET jit = off")
        conn.execute("SET client_encoding TO 'UTF8'")
        row = conn.execute("SELECT count(*) FROM contributions").fetchone()
        rows = int(row[0]) if row else 0
        if rows == 0:
            return {"rows": 0}
        scan = _best_cpu(conn, SCAN)
        per_row = {name: _us(_best_cpu(conn, sql) - scan, rows) for name, sql in PROBES.items()}
        conn.execute(LEAF_BYTES)
        leaves_scan = _best_cpu(conn, SCAN_ONLY)
        per_row["leaf_hash"] = _us(_best_cpu(conn, HASH_ONLY) - leaves_scan, rows)
        conn.execute("DROP TABLE floor_leaves")
    hashes = os.urandom(merkle.HASH_SIZE * PYTHON_LEAVES)
    # The bare hashlib call over a node's 65 bytes: the floor, without merkle.node_hash's
    # concatenation of its halves (which Frontier.extend's per-level loop also avoids).
    node = b"\x01" + hashes[:64]
    per_row["python_node_hash"] = _us(
        _python_cpu(lambda: [hashlib.sha256(node).digest() for _ in range(PYTHON_LEAVES)]),
        PYTHON_LEAVES,
    )
    per_row["python_frontier_per_leaf"] = _us(
        _python_cpu(lambda: merkle.Frontier().extend(hashes)), PYTHON_LEAVES
    )
    return {
        "rows": rows,
        "us_per_row": per_row,
        # Hashing alone: the leaf in PostgreSQL, one node (amortised) in Python.
        "hashes_only_us": round(per_row["leaf_hash"] + per_row["python_node_hash"], 3),
        # What the signer cannot do without: encode, hash the leaf, extend the tree.
        "encode_hash_tree_us": round(
            per_row["encode_and_leaf_hash"] + per_row["python_frontier_per_leaf"], 3
        ),
    }


def budget_us(ledger_ab: dict[str, Any] | None) -> float | None:
    """5 % of a ContributeBatch item's server + PostgreSQL CPU with signing off."""
    if not ledger_ab:
        return None
    off = ledger_ab["batch"]["off"]
    server, pg = off.get("median_cpu_us_per_item"), off.get("median_pg_cpu_us_per_item")
    return None if server is None or pg is None else BUDGET_SHARE * (server + pg)


def summary(floor: dict[str, Any], budget: float | None) -> str:
    if not floor.get("rows"):
        return "ledger floor: no rows"
    per = floor["us_per_row"]
    line = (
        f"ledger floor per row (CPU µs, {floor['rows']:,} rows): field texts"
        f" {per['field_texts']}, encode {per['encode']}, encode + leaf hash"
        f" {per['encode_and_leaf_hash']}, leaf hash alone {per['leaf_hash']} (PostgreSQL);"
        f" node hash {per['python_node_hash']}, frontier {per['python_frontier_per_leaf']}"
        f" per leaf (Python); hashes alone {floor['hashes_only_us']}, encode + hash + tree"
        f" {floor['encode_hash_tree_us']}"
    )
    if budget is not None:
        line += f"; ContributeBatch's 5 % budget {budget:.2f} µs per item"
    return line


def report_line(report: dict[str, Any]) -> str:
    """The floor of a `make bench` report, against its A/B's budget when it ran one."""
    return summary(report["audit_scenario"]["ledger_floor"], budget_us(report.get("ledger_ab")))
