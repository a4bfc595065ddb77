"""Every repository operation against a real, freshly migrated PostgreSQL database."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.adapters import (
    books_audit,
    config_store,
    database_liveness,
    pool_store,
    win_store,
)
from jackpot_grpc.adapters import contribution_store as store
from jackpot_grpc.adapters.two_flights_async import contribute_in_two_flights
from jackpot_grpc.domain import rules
from jackpot_grpc.domain.model import (
    GROUPS,
    ContributeCommand,
    ContributionResult,
    ContributionShares,
    Group,
    PoolConfig,
    ScopedKey,
    StoredContribution,
    WinCommand,
    WinOutcome,
)
from testkit.random_refs import random_game_id, random_key, random_user_id

Pool = AsyncConnectionPool[AsyncConnection[Any]]


async def scalar(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    async with await AsyncConnection.connect(database_url) as conn:
        row = await (await conn.execute(sql, params)).fetchone()
        assert row is not None
        return row[0]


CLIENT = "game-a"


def command(wager: int, key: str | None = None, client: str = CLIENT) -> ContributeCommand:
    return ContributeCommand(
        game_id=random_game_id(), wager_amount=wager, idempotency_key=key, client=client
    )


def shares(minor: int, major: int, mega: int, after: tuple[int, int, int]) -> ContributionShares:
    return ContributionShares(
        amounts={Group.MINOR: minor, Group.MAJOR: major, Group.MEGA: mega},
        pools_after=dict(zip(GROUPS, after, strict=True)),
    )


NO_MOVE = dict.fromkeys(GROUPS, 0)


async def record(
    database_url: str,
    sums: dict[Group, int],
    counts: dict[Group, int],
    commands: list[ContributeCommand],
    rows: list[ContributionShares],
    *,
    end: tuple[str, ...] = store.COMMIT,
) -> store.Recorded:
    """A batch of these rows written by the service's write path (the two flights on an
    autocommit connection), its plan given: each pool moved by `sums`, `counts` rows."""

    def plan(pools: Any, known: Any) -> store.BatchWrite:
        return store.BatchWrite(sums, counts, commands, rows)

    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        return await contribute_in_two_flights(conn, [], plan, end=end)


async def find(database_url: str, keys: list[ScopedKey]) -> dict[ScopedKey, StoredContribution]:
    """Earlier contributions with these keys, as the write path's lookup finds them."""
    found: dict[ScopedKey, StoredContribution] = {}

    def plan(pools: Any, known: dict[ScopedKey, StoredContribution]) -> None:
        found.update(known)

    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await contribute_in_two_flights(conn, keys, plan)
    return found


async def add_rows(
    database_url: str, commands: list[ContributeCommand], rows: list[ContributionShares]
) -> list[tuple[int, Any]]:
    """Ledger rows through the write path, the pools left where they are."""
    _, written = await record(database_url, NO_MOVE, NO_MOVE, commands, rows)
    return [(row.row_id, row.created_at) for row in written]


async def test_lock_pools_returns_the_default_pools_in_lock_order(pool: Pool) -> None:
    async with pool.connection() as conn:
        pools = await pool_store.lock_pools(conn)
    assert list(pools) == list(GROUPS)
    minor, major, mega = (pools[g] for g in GROUPS)
    assert (minor.current_amount, minor.seed_amount, minor.max_amount) == (10000, 10000, 100000)
    assert (major.current_amount, major.seed_amount, major.max_amount) == (
        100000,
        100000,
        1000000,
    )
    assert (mega.current_amount, mega.seed_amount, mega.max_amount) == (1000000, 1000000, None)
    assert [p.contribution_rate for p in pools.values()] == [
        Decimal("0.005"),
        Decimal("0.003"),
        Decimal("0.002"),
    ]
    assert all(p.version == 1 and p.total_seed_funding == p.seed_amount for p in pools.values())


async def test_lock_pools_holds_the_rows_until_the_transaction_ends(
    pool: Pool, database_url: str
) -> None:
    async with await AsyncConnection.connect(database_url, autocommit=True) as other:
        async with pool.connection() as conn:
            await pool_store.lock_pools(conn)
            for group in GROUPS:
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    await other.execute(
                        "SELECT 1 FROM jackpots WHERE jackpot_group = %s FOR UPDATE NOWAIT",
                        (group.value,),
                    )
        # Committed: the rows are free again.
        await other.execute("SELECT 1 FROM jackpots FOR UPDATE NOWAIT")


async def test_the_write_path_returns_ids_in_the_order_given(pool: Pool, database_url: str) -> None:
    wagers = [500, 100, 900, 300, 700, 200]
    commands = [command(w, random_key(str(i))) for i, w in enumerate(wagers)]
    rows = [shares(w // 100, 0, 0, (1, 2, 3)) for w in wagers]
    async with pool.connection():
        ids = await add_rows(database_url, commands, rows)
    assert len(ids) == len(wagers)
    assert [i for i, _ in ids] == sorted(i for i, _ in ids)
    async with await AsyncConnection.connect(database_url) as check:
        cur = await check.execute(
            "SELECT id, wager_amount, game_id, minor_amount FROM contributions ORDER BY id"
        )
        stored = await cur.fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in stored] == [
        (row_id, c.wager_amount, c.game_id, c.wager_amount // 100)
        for (row_id, _), c in zip(ids, commands, strict=True)
    ]


async def test_the_key_lookup_finds_by_key_and_replays(pool: Pool, database_url: str) -> None:
    key_a, key_b = random_key("a"), random_key("b")
    async with pool.connection():
        assert await find(database_url, []) == {}
        assert await find(database_url, [(CLIENT, key_a)]) == {}
        commands = [
            command(1000, key_a),
            command(2000, None),
            command(3000, key_b),
            command(4000, key_a, client="game-b"),
        ]
        ids = await add_rows(
            database_url,
            commands,
            [
                shares(5, 3, 2, (10005, 100003, 1000002)),
                shares(10, 6, 4, (10015, 100009, 1000006)),
                shares(15, 9, 6, (10030, 100018, 1000012)),
                shares(20, 12, 8, (10050, 100030, 1000020)),
            ],
        )
        stored = await find(
            database_url,
            [(CLIENT, key_b), (CLIENT, key_a), (CLIENT, random_key("missing")), ("x", key_b)],
        )
        theirs = await find(database_url, [("game-b", key_a), ("game-b", key_b)])
    a, b = (CLIENT, key_a), (CLIENT, key_b)
    assert stored[a].fingerprint == commands[0].fingerprint
    found = {key: s.result for key, s in stored.items()}
    assert set(found) == {a, b}  # keys are per client: ("x", key_b) is another request
    assert found[a].contribution_id == ids[0][0]
    assert found[b].contribution_id == ids[2][0]
    assert found[b].replayed is True
    assert found[b].shares.amounts == {Group.MINOR: 15, Group.MAJOR: 9, Group.MEGA: 6}
    assert found[b].shares.pools_after == {
        Group.MINOR: 10030,
        Group.MAJOR: 100018,
        Group.MEGA: 1000012,
    }
    assert found[a].created_at == ids[0][1]
    assert list(theirs) == [("game-b", key_a)]
    assert theirs["game-b", key_a].result.contribution_id == ids[3][0]
    assert theirs["game-b", key_a].fingerprint == commands[3].fingerprint


async def test_a_repeated_idempotency_key_is_refused_by_the_unique_index(
    pool: Pool, database_url: str
) -> None:
    key = random_key()
    row = shares(1, 1, 1, (1, 1, 1))
    with pytest.raises(psycopg.errors.UniqueViolation):
        async with pool.connection():
            await add_rows(database_url, [command(100, key), command(100, key)], [row, row])


async def test_the_unique_index_scopes_a_key_per_client(pool: Pool, database_url: str) -> None:
    key = random_key()
    row = shares(1, 1, 1, (1, 1, 1))
    async with pool.connection():
        await add_rows(
            database_url, [command(100, key), command(100, key, client="game-b")], [row, row]
        )
    clients = await scalar(
        database_url,
        "SELECT array_agg(client ORDER BY client) FROM contributions WHERE idempotency_key = %s",
        (key,),
    )
    assert clients == [CLIENT, "game-b"]


async def test_the_write_path_moves_all_three_pools_and_the_totals(
    pool: Pool, database_url: str
) -> None:
    async with pool.connection() as conn:
        updated, ids = await record(
            database_url,
            {Group.MINOR: 7, Group.MAJOR: 0, Group.MEGA: 11},
            {Group.MINOR: 2, Group.MAJOR: 0, Group.MEGA: 3},
            [command(1400), command(2000), command(600)],
            [
                shares(7, 0, 5, (10007, 100000, 1000005)),
                shares(0, 0, 4, (10007, 100000, 1000009)),
                shares(0, 0, 2, (10007, 100000, 1000011)),
            ],
        )
        assert await books_audit.contribution_totals(conn) == (3, 4000)
    async with pool.connection() as conn:
        read = await pool_store.read_pools(conn)
    assert read == updated
    assert [p.group for p in updated] == list(GROUPS)
    assert [p.current_amount for p in updated] == [10007, 100000, 1000011]
    assert [p.total_contributions for p in updated] == [7, 0, 11]
    assert [p.contribution_count for p in updated] == [2, 0, 3]
    assert [p.version for p in updated] == [2, 2, 2]
    assert len(ids) == 3 and len({row.created_at for row in ids}) == 1


async def test_written_rows_take_gap_free_leaf_indexes_from_the_ledger_head(
    pool: Pool, database_url: str
) -> None:
    """Every writer claims its rows' leaf indexes in its own transaction: a batch takes
    consecutive indexes in row order, a win with a top-up two (the top-up right after),
    a config change one; a rolled-back write gives its indexes back."""
    async with pool.connection() as conn:
        (head,) = await (await conn.execute("SELECT size FROM ledger_head")).fetchone() or (0,)
    _, written = await record(
        database_url, NO_MOVE, NO_MOVE, [command(100), command(200), command(300)],
        [shares(0, 0, 0, (1, 2, 3))] * 3,
    )  # fmt: skip
    assert [r.leaf_index for r in written] == [head, head + 1, head + 2]
    assert [r.row_id for r in written] == sorted(r.row_id for r in written)
    await record(  # written and rolled back (validate_only's end)
        database_url, NO_MOVE, NO_MOVE, [command(100)], [shares(0, 0, 0, (1, 2, 3))],
        end=store.VALIDATE_ONLY_END,
    )  # fmt: skip
    win = WinCommand(Group.MINOR, "g", random_user_id(), None, None, CLIENT)
    async with pool.connection() as conn:
        pools = await pool_store.lock_pools(conn)
        outcome = rules.pay_win(pools[Group.MINOR].current_amount, 10_000, None)
        win_id, _, win_leaf, _ = await win_store.record_win(conn, win, outcome)
    assert outcome.seed_top_up > 0 and win_leaf == head + 3
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT leaf_index FROM seed_fundings WHERE win_id = %s", (win_id,)
        )
        assert await cur.fetchone() == (head + 4,)
        cur = await conn.execute("SELECT size FROM ledger_head")
        assert await cur.fetchone() == (head + 5,)


async def test_record_win_with_top_up_writes_the_seed_funding(
    pool: Pool, database_url: str
) -> None:
    user = random_user_id()
    win = WinCommand(Group.MINOR, random_game_id(), user, None, random_key(), CLIENT)
    outcome = WinOutcome(amount=10000, pool_before=10000, seed_top_up=10000, pool_after=10000)
    async with pool.connection() as conn:
        win_id, created_at, _, after = await win_store.record_win(conn, win, outcome)
    assert (after.current_amount, after.total_wins, after.total_seed_funding) == (
        10000,
        10000,
        20000,
    )
    assert (after.win_count, after.last_won_amount, after.last_won_by_user_id) == (1, 10000, user)
    assert after.last_won_at == created_at
    assert after.version == 2
    async with await AsyncConnection.connect(database_url) as check:
        cur = await check.execute(
            "SELECT jackpot_group, amount, reason FROM seed_fundings WHERE win_id = %s", (win_id,)
        )
        assert await cur.fetchall() == [("minor", 10000, "reset to seed after win")]
        cur = await check.execute(
            """SELECT idempotency_key, client, user_id, requested_amount, amount, pool_before,
                      seed_top_up, pool_after FROM wins WHERE id = %s""",
            (win_id,),
        )
        assert await cur.fetchone() == (
            win.idempotency_key,
            CLIENT,
            user,
            None,
            10000,
            10000,
            10000,
            10000,
        )
    async with pool.connection() as conn:
        found = await win_store.find_win(conn, CLIENT, win.idempotency_key or "")
        assert await win_store.find_win(conn, "game-b", win.idempotency_key or "") is None
    assert found is not None
    assert found.win_id == win_id
    assert found.outcome == outcome


async def test_record_win_without_top_up_writes_no_seed_funding(
    pool: Pool, database_url: str
) -> None:
    win = WinCommand(Group.MAJOR, random_game_id(), random_user_id(), 1, None, CLIENT)
    outcome = WinOutcome(amount=1, pool_before=100000, seed_top_up=0, pool_after=99999)
    async with pool.connection() as conn:
        _, _, _, after = await win_store.record_win(conn, win, outcome)
        assert await win_store.find_win(conn, CLIENT, random_key()) is None
    assert (after.current_amount, after.total_wins, after.total_seed_funding) == (
        99999,
        1,
        100000,
    )
    assert await scalar(database_url, "SELECT count(*) FROM seed_fundings") == 3  # initial seeds


async def test_save_config_writes_the_pool_and_an_audit_row(pool: Pool, database_url: str) -> None:
    before = PoolConfig(Group.MEGA, Decimal("0.0020000000"), 1000000, None, 1)
    after = PoolConfig(Group.MEGA, Decimal("0.0035"), 2000000, 9000000, 2)
    async with pool.connection() as conn:
        audit_id = await config_store.save_config(
            conn, before, after, "alice", "seasonal boost", "ops-console"
        )
        pools = {p.group: p for p in await pool_store.read_pools(conn)}
    assert config_store.config_of(pools[Group.MEGA]) == after
    async with await AsyncConnection.connect(database_url) as check:
        cur = await check.execute(
            "SELECT jackpot_group, actor, reason, before, after, changed_at, client"
            " FROM config_audit WHERE id = %s",
            (audit_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    group, actor, reason, audit_before, audit_after, changed_at, client = row
    assert (group, actor, reason, client) == ("mega", "alice", "seasonal boost", "ops-console")
    assert changed_at is not None
    assert audit_before == {
        "contribution_rate": "0.0020000000",
        "seed_amount": 1000000,
        "max_amount": None,
        "version": 1,
        "reserve_rate": "0.0000000000",
        "overflow_policy": "accumulate",
        "overflow_target": None,
    }
    assert audit_after == {
        "contribution_rate": "0.0035000000",
        "seed_amount": 2000000,
        "max_amount": 9000000,
        "version": 2,
        "reserve_rate": "0.0000000000",
        "overflow_policy": "accumulate",
        "overflow_target": None,
    }
    assert json.loads(json.dumps(audit_after))["contribution_rate"] == "0.0035000000"


async def test_contribution_totals_counts_and_sums_wagers(pool: Pool, database_url: str) -> None:
    async with pool.connection() as conn:
        assert await books_audit.contribution_totals(conn) == (0, 0)
        await add_rows(
            database_url,
            [command(1000), command(2500), command(1)],
            [shares(0, 0, 0, (0, 0, 0))] * 3,
        )
        assert await books_audit.contribution_totals(conn) == (3, 3501)


async def test_audit_pools_balances_and_finds_a_discrepancy(pool: Pool, database_url: str) -> None:
    async with pool.connection() as conn:
        audits = await books_audit.audit_pools(conn)
    assert [a.group for a in audits] == list(GROUPS)
    assert all(a.balanced for a in audits)
    assert [a.expected_amount for a in audits] == [10000, 100000, 1000000]

    async with pool.connection() as conn:  # a correct contribution, then a stray write
        await record(
            database_url,
            {Group.MINOR: 5, Group.MAJOR: 3, Group.MEGA: 2},
            dict.fromkeys(GROUPS, 1),
            [command(1000)],
            [shares(5, 3, 2, (0, 0, 0))],
        )
        await conn.execute(
            "UPDATE jackpots SET current_amount = current_amount + 7 WHERE jackpot_group = 'major'"
        )
        audits = await books_audit.audit_pools(conn)
    minor, major, mega = audits
    assert (minor.contributions, minor.discrepancy, minor.balanced) == (5, 0, True)
    assert (major.contributions, major.discrepancy, major.balanced) == (3, 7, False)
    assert (mega.contributions, mega.current_amount, mega.balanced) == (2, 1000002, True)


async def test_audit_pools_catches_a_total_that_disagrees_with_the_ledger(pool: Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute("UPDATE jackpots SET total_wins = 1 WHERE jackpot_group = 'minor'")
        minor = (await books_audit.audit_pools(conn))[0]
    assert minor.discrepancy == 0
    assert minor.balanced is False


async def test_ping_answers(pool: Pool) -> None:
    async with pool.connection() as conn:
        await database_liveness.ping(conn)
        assert conn.info.transaction_status is psycopg.pq.TransactionStatus.INTRANS


async def test_audit_ledger_checks_the_contribution_totals_against_the_ledger(
    pool: Pool, database_url: str
) -> None:
    async with pool.connection() as conn:  # two real contributions at the default rates
        await record(
            database_url,
            {Group.MINOR: 6, Group.MAJOR: 3, Group.MEGA: 2},
            {Group.MINOR: 2, Group.MAJOR: 1, Group.MEGA: 1},
            [command(1000), command(250)],
            [shares(5, 3, 2, (10005, 100003, 1000002)), shares(1, 0, 0, (10006, 100003, 1000002))],
        )
        books = await books_audit.audit_ledger(conn)
    assert books.balanced and books.problems() == []
    assert (books.contribution_count, books.total_wagered) == (2, 1250)
    assert (books.recorded_contribution_count, books.recorded_total_wagered) == (2, 1250)

    async with pool.connection() as conn:  # a ledger row written behind the totals' back
        await conn.execute(
            "INSERT INTO contributions (client, game_id, wager_amount, minor_amount,"
            " major_amount, mega_amount, minor_after, major_after, mega_after)"
            " VALUES ('stray', 'stray', 40, 0, 0, 0, 0, 0, 0)"
        )
        books = await books_audit.audit_ledger(conn)
    assert all(p.balanced for p in books.pools)
    assert not books.totals_balanced and not books.balanced
    assert (books.contribution_count, books.recorded_contribution_count) == (3, 2)
    assert books.problems()[0] == (
        "contribution totals record 2 rows and 1250 wagered; the ledger has 3 and 1290"
    )


async def test_a_replayed_win_or_contribution_answers_its_first_leaf_index(pool: Pool) -> None:
    from jackpot_grpc.service.jackpot import JackpotService

    service = JackpotService(pool)
    key = random_key("w")
    win = WinCommand(Group.MEGA, "g", random_user_id(), 100, key, CLIENT)
    first = await service.win(win)
    again = await service.win(win)
    assert (again.replayed, again.win_id, again.leaf_index) == (
        True,
        first.win_id,
        first.leaf_index,
    )
    assert first.leaf_index >= 3  # after the three initial seeds
    assert first.outcome.seed_top_up > 0  # the top-up is the leaf after the win's
    contribution = command(1000, random_key("c"))
    (made,) = await service.contribute_many([contribution])
    (replay,) = await service.contribute_many([contribution])
    assert isinstance(made, ContributionResult) and isinstance(replay, ContributionResult)
    assert replay.replayed and replay.leaf_index == made.leaf_index == first.leaf_index + 2
