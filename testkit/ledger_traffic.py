"""Real traffic through the service into a migrated database: every kind of ledger row, for
the audit and checkpoint tests to prove (and tamper with)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.domain.model import ConfigChange, ContributeCommand, Group, WinCommand
from jackpot_grpc.service.jackpot import JackpotService
from testkit.random_refs import random_game_id, random_key, random_user_id


def contribute(game: str, wager: int) -> ContributeCommand:
    return ContributeCommand(
        game_id=game, wager_amount=wager, idempotency_key=random_key(), client="game-a"
    )


def change(group: Group, **values: Any) -> ConfigChange:
    fields: dict[str, Any] = {
        "contribution_rate": None,
        "seed_amount": None,
        "max_amount": None,
        "clear_max_amount": False,
        "expected_version": None,
        "actor": "test",
        "reason": "audit proofs",
    }
    return ConfigChange(group=group, **(fields | values))


async def real_traffic(url: str) -> None:
    """Batches and single wagers, a rate change, a lowered cap (shares cut, some to 0),
    wins with and without a seed top-up, a suspended pool, a change applied at a win: every
    kind of ledger row."""
    async with AsyncConnectionPool(url, min_size=1, max_size=2, open=False) as pool:
        await pool.open(wait=True, timeout=10)
        service = JackpotService(pool)
        game = random_game_id()
        await service.contribute_many([contribute(game, w) for w in (1000, 250, 7, 99_999)])
        await service.update_config(
            change(Group.MAJOR, contribution_rate=Decimal("0.0041")), client="test"
        )
        await service.contribute_many([contribute(game, 12_345)])
        # minor holds ~10 500 under a cap of 100 000: a wager of 20 000 000 fills it.
        await service.contribute_many([contribute(game, 20_000_000), contribute(game, 5_000)])
        await service.win(
            WinCommand(Group.MINOR, game, random_user_id(), 95_000, random_key(), "game-a")
        )
        await service.win(
            WinCommand(Group.MEGA, game, random_user_id(), 100, random_key(), "game-a")
        )
        await service.update_config(change(Group.MAJOR, max_amount=100_500), client="test")
        await service.contribute_many([contribute(game, 3_000_000), contribute(game, 10)])
        await service.win(
            WinCommand(Group.MAJOR, game, random_user_id(), None, random_key(), "game-a")
        )
        await service.contribute_many([contribute(game, 777)])
        # The pool lifecycle: a suspension (a wager's mega share is 0), its resumption, and a
        # change scheduled for minor's next win, applied by it.
        await service.set_suspended(Group.MEGA, True, "test", "audit proofs", "test")
        await service.contribute_many([contribute(game, 20_000)])
        await service.set_suspended(Group.MEGA, False, "test", "", "test")
        await service.update_config(
            change(Group.MINOR, contribution_rate=Decimal("0.0049"), apply_at_next_win=True),
            client="test",
        )
        await service.contribute_many([contribute(game, 20_000)])
        await service.win(
            WinCommand(Group.MINOR, game, random_user_id(), 10, random_key(), "game-a")
        )
        await service.contribute_many([contribute(game, 20_000)])
