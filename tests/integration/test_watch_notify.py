"""Migration 0009: a change of the pools is announced on `jackpot_changes` only once its
transaction commits; a rolled-back one (a dry run) announces nothing. The server's
listener holds its connection only while it is wanted (someone watches)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import psycopg

from jackpot_grpc.adapters.change_listener import CHANNEL, CONNECTED, ChangeListener
from jackpot_grpc.adapters.database import LISTENER_APPLICATION_NAME
from jackpot_grpc.config import Settings


def pending(listener: psycopg.Connection[Any]) -> list[str]:
    """Notifications delivered so far (none waited for)."""
    return [n.payload for n in listener.notifies(timeout=0.2, stop_after=10)]


def test_changes_are_announced_after_commit_only(database_url: str) -> None:
    with (
        psycopg.connect(database_url, autocommit=True) as listener,
        psycopg.connect(database_url) as writer,
    ):
        listener.execute(f"LISTEN {CHANNEL}")
        writer.execute("UPDATE jackpots SET version = version + 1 WHERE jackpot_group = 'minor'")
        assert pending(listener) == []  # not before the commit
        writer.commit()
        assert pending(listener) == ["pools"]

        writer.execute("UPDATE jackpots SET version = version + 1")
        writer.rollback()
        assert pending(listener) == []

        # A win moves its pool and inserts its row: both are announced, once each.
        writer.execute("UPDATE jackpots SET version = version + 1 WHERE jackpot_group = 'mega'")
        writer.execute("UPDATE jackpots SET version = version + 1 WHERE jackpot_group = 'major'")
        writer.execute(
            """INSERT INTO wins (client, jackpot_group, game_id, user_id, amount, pool_before,
                                 seed_top_up, pool_after)
               SELECT 'test', 'mega', 'g', gen_random_uuid(), 1, current_amount, 0,
                      current_amount - 1
               FROM jackpots WHERE jackpot_group = 'mega'"""
        )
        writer.commit()
        assert sorted(pending(listener)) == ["pools", "wins"]


def listener_backends(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (LISTENER_APPLICATION_NAME,),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_the_listener_connects_only_while_wanted(
    settings: Settings, database_url: str
) -> None:
    payloads: list[str] = []
    listener = ChangeListener(settings, database_url, payloads.append, idle_close=0.2)
    try:
        await asyncio.sleep(0.2)
        assert listener_backends(database_url) == 0  # not wanted: no connection
        listener.want(True)
        await until(lambda: payloads == [CONNECTED])
        assert listener_backends(database_url) == 1
        with psycopg.connect(database_url, autocommit=True) as writer:
            writer.execute(
                "UPDATE jackpots SET version = version + 1 WHERE jackpot_group = 'minor'"
            )
            await until(lambda: payloads == [CONNECTED, "pools"])
            listener.want(False)
            listener.want(True)  # wanted again before the idle close: the same connection
            await asyncio.sleep(0.4)
            assert listener_backends(database_url) == 1
            assert payloads == [CONNECTED, "pools"]
            listener.want(False)
            await until(lambda: listener_backends(database_url) == 0)
            writer.execute(
                "UPDATE jackpots SET version = version + 1 WHERE jackpot_group = 'minor'"
            )
            await asyncio.sleep(0.3)
        assert payloads == [CONNECTED, "pools"]  # nothing heard while nobody listened
    finally:
        await listener.stop()
