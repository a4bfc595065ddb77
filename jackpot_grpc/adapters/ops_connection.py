"""What operator commands do on their connections: rows, one row, a timed ping; and
conninfo edits.

The operator commands (jackpot db ..., backup, diagnostics) run one statement at a time
on a short-lived, synchronous, autocommit connection with dict rows, opened by
adapters.database.connect_ops (where every kind of connection is opened).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jackpot_grpc.adapters.database import OpsConn


def rows(
    conn: OpsConn, query: Any, params: Sequence[Any] | dict[str, Any] = ()
) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def one(conn: OpsConn, query: Any, params: Sequence[Any] | dict[str, Any] = ()) -> dict[str, Any]:
    found = rows(conn, query, params)
    if not found:
        raise LookupError("query returned no row")
    return found[0]


def timed_ping(conn: OpsConn, samples: int = 3) -> float:
    """The best of a few `SELECT 1` round trips, in milliseconds."""
    best = float("inf")
    for _ in range(samples):
        started = time.perf_counter()
        conn.execute("SELECT 1")
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def split_password(url: str) -> tuple[str, str | None]:
    """The conninfo without its password (for command lines, which others can read)."""
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    return make_conninfo("", **params), None if password is None else str(password)


def with_dbname(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


def dbname_of(url: str) -> str | None:
    name = conninfo_to_dict(url).get("dbname")
    return None if name is None else str(name)
