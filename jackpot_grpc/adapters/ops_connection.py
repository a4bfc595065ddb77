"""Operator connections: short-lived, synchronous, autocommit, dict rows; and conninfo edits.

The operator commands (jackpot db ..., backup, diagnostics) run one statement at a time
against the database; the service's own pool lives in adapters.database.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

# Contains "jackpot", as the runbook's `application_name LIKE '%jackpot%'` expects; the
# queries below leave out their own connection.
APPLICATION_NAME = "jackpot-ops"

Conn = psycopg.Connection[dict[str, Any]]


def connect(url: str, *, dbname: str | None = None, timeout: float = 5.0) -> Conn:
    """An autocommit connection (each statement its own transaction) with dict rows."""
    conninfo = make_conninfo(url, dbname=dbname) if dbname else url
    return psycopg.connect(
        conninfo,
        autocommit=True,
        connect_timeout=max(1, round(timeout)),
        application_name=APPLICATION_NAME,
        row_factory=dict_row,
    )


def rows(
    conn: Conn, query: Any, params: Sequence[Any] | dict[str, Any] = ()
) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def one(conn: Conn, query: Any, params: Sequence[Any] | dict[str, Any] = ()) -> dict[str, Any]:
    found = rows(conn, query, params)
    if not found:
        raise LookupError("query returned no row")
    return found[0]


def timed_ping(conn: Conn, samples: int = 3) -> float:
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
