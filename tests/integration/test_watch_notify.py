"""Migration 0009: a change of the pools is announced on `jackpot_changes` only once its
transaction commits; a rolled-back one (a dry run) announces nothing."""

from __future__ import annotations

from typing import Any

import psycopg

from jackpot_grpc.adapters.change_listener import CHANNEL


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
