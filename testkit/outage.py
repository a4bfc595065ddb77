"""The database "goes away" for real: connections to it are refused
(`ALTER DATABASE ... ALLOW_CONNECTIONS false`) and its sessions are terminated."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
from psycopg.conninfo import conninfo_to_dict


def database_name(database_url: str) -> str:
    name = conninfo_to_dict(database_url)["dbname"]
    assert isinstance(name, str) and name.isidentifier()
    return name


def set_connections_allowed(admin_url: str, name: str, allowed: bool) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {str(allowed).lower()}")
        if not allowed:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


@contextlib.asynccontextmanager
async def database_outage(admin_url: str, database_url: str) -> AsyncIterator[str]:
    """The test database refuses connections and loses its sessions until the block ends."""
    name = database_name(database_url)
    await asyncio.to_thread(set_connections_allowed, admin_url, name, False)
    try:
        yield name
    finally:
        await asyncio.to_thread(set_connections_allowed, admin_url, name, True)
