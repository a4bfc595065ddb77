"""The statements a restore runs around pg_restore: make its new database, or drop it again.

Database names cannot be bound parameters; they go in through psycopg.sql.Identifier.
"""

from __future__ import annotations

from psycopg import sql

from jackpot_grpc.adapters.database import OpsConn
from jackpot_grpc.adapters.ops_connection import rows


def database_exists(conn: OpsConn, database: str) -> bool:
    return bool(rows(conn, "SELECT 1 FROM pg_database WHERE datname = %s", (database,)))


def create_database(conn: OpsConn, database: str) -> None:
    conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(database)))


def drop_database(conn: OpsConn, database: str) -> None:
    """Drop it even with sessions still connected (a half-made restore's leftovers)."""
    conn.execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
    )
