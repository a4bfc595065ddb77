"""The server's parts start and stop in one declared order (entrypoints/server.start_parts).

A start that fails part-way unwinds what it had started, in reverse: here the health port
is taken, so the start fails after the pools, the background jobs and the batcher are up.
Nothing may be left behind: no open pool, no background task, no history row written by a
server that never served.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import psycopg
import pytest

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import build_server, start_parts


async def test_a_start_that_fails_unwinds_every_part_it_started(
    settings: Settings, database_url: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        blocked = dataclasses.replace(
            settings,
            batch=dataclasses.replace(settings.batch, enabled=True),
            health=dataclasses.replace(settings.health, port=taken.getsockname()[1]),
            grpc=dataclasses.replace(settings.grpc, reuse_port=False),
        )
        parts = build_server(blocked, database_url, port=0)
        before = asyncio.all_tasks()
        with pytest.raises(OSError):
            await start_parts(parts)

    assert parts.db_pool.closed
    assert parts.side_db_pool.closed
    left = {t.get_name() for t in asyncio.all_tasks() - before if not t.done()}
    assert left == set(), f"tasks left running after a failed start: {sorted(left)}"
    with psycopg.connect(database_url) as conn:
        samples = conn.execute(
            "SELECT (SELECT count(*) FROM system_metrics) + (SELECT count(*) FROM request_rollups)"
        ).fetchone()
    assert samples == (0,), "a server that never served wrote a last minute of metrics"
