"""Every RPC and every error code over a real channel to a real server on a real database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from google.type import decimal_pb2
from grpc_status import rpc_status
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.entrypoints.server import RunningServer
from testkit.ledger import table_counts
from testkit.outage import database_outage
from testkit.random_refs import random_game_id, random_key, random_user

Stub = jackpot_pb2_grpc.JackpotServiceStub

ADMIN = (("authorization", "Bearer test-admin-token"),)
MINOR, MAJOR, MEGA = pb.JACKPOT_GROUP_MINOR, pb.JACKPOT_GROUP_MAJOR, pb.JACKPOT_GROUP_MEGA
# A fresh database's ledger row counts (the migration funds the three default pools' seeds).
NOTHING_WRITTEN = {"contributions": 0, "wins": 0, "seed_fundings": 3, "config_audit": 0}


def amounts(items: Iterable[pb.GroupAmount]) -> list[tuple[int, int]]:
    return [(i.group, i.amount) for i in items]


async def failure(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call  # type: ignore[misc]
    return exc.value


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    assert status.code == code_pb2.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    (_,) = [d for d in status.details if d.Unpack(bad)]
    return [(v.field, v.description) for v in bad.field_violations]


async def contribute(stub: Stub, wager: int, key: str = "") -> pb.ContributeResponse:
    # A keyed request is bound to its fields: the same key and wager is the same game.
    game = f"game-{key}" if key else random_game_id()
    request = pb.ContributeRequest(game_id=game, wager_amount=wager, idempotency_key=key)
    reply: pb.ContributeResponse = await stub.Contribute(request)
    return reply


async def applies_once(stub: Stub, request: pb.ContributeRequest | pb.WinRequest) -> None:
    """A keyed request sent twice: written the first time (its key was not taken by an
    earlier refusal), replayed the second."""
    send = stub.Contribute if isinstance(request, pb.ContributeRequest) else stub.Win
    first, again = await send(request), await send(request)
    assert (first.replayed, again.replayed) == (False, True)
    row_id = "contribution_id" if isinstance(request, pb.ContributeRequest) else "win_id"
    assert getattr(again, row_id) == getattr(first, row_id) > 0


# --- the RPCs ----------------------------------------------------------------------------


async def test_contribute_answers_shares_and_pools(stub: Stub) -> None:
    reply = await contribute(stub, 100_000)
    assert amounts(reply.contributions) == [(MINOR, 500), (MAJOR, 300), (MEGA, 200)]
    assert reply.total_contribution == 1000
    assert amounts(reply.pool_amounts) == [(MINOR, 10500), (MAJOR, 100300), (MEGA, 1000200)]
    assert reply.contribution_id > 0
    assert reply.created_at.seconds > 0
    assert reply.replayed is False


async def test_contribute_with_a_repeated_key_replays(stub: Stub) -> None:
    key = random_key()
    first = await contribute(stub, 100_000, key)
    again = await contribute(stub, 100_000, key)
    assert again.replayed is True
    assert (again.contribution_id, again.total_contribution) == (first.contribution_id, 1000)
    assert again.pool_amounts == first.pool_amounts
    pools = await stub.GetPools(pb.GetPoolsRequest())
    assert [p.current_amount for p in pools.pools] == [10500, 100300, 1000200]
    # The key is bound to the first request: another wager with it is refused.
    reused = await failure(contribute(stub, 999_999, key))
    assert reused.code() is grpc.StatusCode.FAILED_PRECONDITION
    pools = await stub.GetPools(pb.GetPoolsRequest())
    assert [p.current_amount for p in pools.pools] == [10500, 100300, 1000200]


async def test_contribute_batch_mixes_results_and_item_errors(stub: Stub) -> None:
    key = random_key()
    request = pb.ContributeBatchRequest(
        contributions=[
            pb.ContributeRequest(game_id="slots", wager_amount=1000, idempotency_key=key),
            pb.ContributeRequest(game_id="slots", wager_amount=-1),
            pb.ContributeRequest(game_id="", wager_amount=1000),
            pb.ContributeRequest(game_id="slots", wager_amount=2000),
            pb.ContributeRequest(game_id="slots", wager_amount=1000, idempotency_key=key),
        ]
    )
    reply = await stub.ContributeBatch(request)
    counts = (reply.applied_count, reply.replayed_count, reply.rejected_count)
    assert counts == (2, 1, 2)
    outcome = [r.WhichOneof("outcome") for r in reply.results]
    assert outcome == ["result", "error", "error", "result", "result"]
    first, _, _, second, repeat = reply.results
    assert [(e.error.code, e.error.field) for e in reply.results[1:3]] == [
        (code_pb2.INVALID_ARGUMENT, "wager_amount"),
        (code_pb2.INVALID_ARGUMENT, "game_id"),
    ]
    assert first.result.total_contribution == 10
    assert second.result.total_contribution == 20
    assert amounts(second.result.pool_amounts) == [(MINOR, 10015), (MAJOR, 100009), (MEGA, 1000006)]
    assert repeat.result.replayed is True
    assert repeat.result.contribution_id == first.result.contribution_id
    stats = await stub.GetStatistics(pb.GetStatisticsRequest())
    assert (stats.total_contribution_count, stats.total_wagered) == (2, 3000)


async def test_win_a_given_amount_then_the_whole_pool(stub: Stub) -> None:
    await contribute(stub, 2_000_000)  # minor: 10000 + 10000
    user = random_user()
    part = await stub.Win(
        pb.WinRequest(group=MINOR, game_id="slots", user_id=user, win_amount=4000)
    )
    assert (part.actual_win_amount, part.remaining_amount, part.seed_top_up) == (4000, 16000, 0)
    assert part.pool.current_amount == 16000
    assert part.pool.last_won_by_user_id == user
    assert part.pool.last_won_amount == 4000
    assert part.win_id > 0 and part.replayed is False

    key = random_key()
    whole = await stub.Win(
        pb.WinRequest(group=MINOR, game_id="slots", user_id=user, idempotency_key=key)
    )
    assert (whole.actual_win_amount, whole.remaining_amount, whole.seed_top_up) == (
        16000,
        10000,
        10000,
    )
    assert whole.pool.total_wins == 20000
    assert whole.pool.total_seed_funding == 20000
    assert whole.pool.last_won_at.seconds > 0

    again = await stub.Win(
        pb.WinRequest(group=MINOR, game_id="slots", user_id=user, idempotency_key=key)
    )
    assert (again.replayed, again.win_id, again.actual_win_amount) == (True, whole.win_id, 16000)
    stats = await stub.GetStatistics(pb.GetStatisticsRequest())
    assert (stats.total_win_count, stats.total_won) == (2, 20000)


async def test_get_pools_shows_the_default_pools(stub: Stub) -> None:
    reply = await stub.GetPools(pb.GetPoolsRequest())
    assert [p.group for p in reply.pools] == [MINOR, MAJOR, MEGA]
    minor, major, mega = reply.pools
    assert (minor.current_amount, minor.seed_amount, minor.max_amount) == (10000, 10000, 100000)
    assert (major.current_amount, major.seed_amount, major.max_amount) == (
        100000,
        100000,
        1000000,
    )
    assert mega.current_amount == 1000000
    assert not mega.HasField("max_amount")  # no cap
    assert [p.contribution_rate.value for p in reply.pools] == [
        "0.0050000000",
        "0.0030000000",
        "0.0020000000",
    ]
    assert all(p.version == 1 and p.total_seed_funding == p.seed_amount for p in reply.pools)
    assert all(p.updated_at.seconds > 0 and not p.HasField("last_won_at") for p in reply.pools)


async def test_get_statistics_sums_the_ledger(stub: Stub) -> None:
    await contribute(stub, 1000)
    await contribute(stub, 3000)
    await stub.Win(pb.WinRequest(group=MAJOR, game_id="g", user_id=random_user(), win_amount=7))
    stats = await stub.GetStatistics(pb.GetStatisticsRequest())
    assert (stats.total_contribution_count, stats.total_wagered) == (2, 4000)
    assert stats.total_contributed == 20 + 12 + 8
    assert (stats.total_win_count, stats.total_won) == (1, 7)
    assert stats.total_pool_amount == 10020 + 100012 - 7 + 1000008
    assert [(p.group, p.contribution_count, p.win_count) for p in stats.pools] == [
        (MINOR, 2, 0),
        (MAJOR, 2, 1),
        (MEGA, 2, 0),
    ]


async def test_update_config_then_get_config_shows_it(stub: Stub) -> None:
    before = await stub.GetConfig(pb.GetConfigRequest())
    assert [(c.group, c.version) for c in before.pools] == [(MINOR, 1), (MAJOR, 1), (MEGA, 1)]
    reply = await stub.UpdateConfig(
        pb.UpdateConfigRequest(
            group=MEGA,
            contribution_rate=decimal_pb2.Decimal(value="0.0045"),
            max_amount=50_000_000,
            expected_version=1,
            actor="alice",
            reason="e2e",
        ),
        metadata=ADMIN,
    )
    assert reply.audit_id > 0
    assert reply.config.version == 2
    after = await stub.GetConfig(pb.GetConfigRequest())
    mega = after.pools[2]
    assert (mega.group, mega.version, mega.max_amount, mega.seed_amount) == (
        MEGA,
        2,
        50_000_000,
        1000000,
    )
    assert mega.contribution_rate.value == "0.0045000000"
    assert [c.version for c in after.pools[:2]] == [1, 1]
    # The new rate applies to the next contribution.
    reply_c = await contribute(stub, 100_000)
    assert amounts(reply_c.contributions)[2] == (MEGA, 450)


async def test_update_config_can_clear_the_cap(stub: Stub) -> None:
    reply = await stub.UpdateConfig(
        pb.UpdateConfigRequest(group=MINOR, clear_max_amount=True), metadata=ADMIN
    )
    assert not reply.config.HasField("max_amount")
    pools = await stub.GetPools(pb.GetPoolsRequest())
    assert not pools.pools[0].HasField("max_amount")


# --- every error code --------------------------------------------------------------------


async def test_bad_contribute_is_invalid_argument_with_bad_request(
    stub: Stub, database_url: str
) -> None:
    key = random_key("bad")
    bad = pb.ContributeRequest(game_id="  ", wager_amount=0, idempotency_key=key)
    error = await failure(stub.Contribute(bad))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == [
        ("game_id", "must not start or end with whitespace"),
        ("wager_amount", "must be greater than 0"),
    ]
    assert table_counts(database_url) == NOTHING_WRITTEN
    # The corrected request, with the same key, is applied once.
    await applies_once(
        stub, pb.ContributeRequest(game_id="g", wager_amount=1000, idempotency_key=key)
    )
    assert table_counts(database_url) == {**NOTHING_WRITTEN, "contributions": 1}


async def test_bad_win_is_invalid_argument_with_bad_request(stub: Stub, database_url: str) -> None:
    key = random_key("bad-win")
    bad = pb.WinRequest(game_id="g", user_id="x", win_amount=-3, idempotency_key=key)
    error = await failure(stub.Win(bad))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(error)] == ["group", "user_id", "win_amount"]
    assert table_counts(database_url) == NOTHING_WRITTEN
    await applies_once(
        stub,
        pb.WinRequest(
            group=MINOR, game_id="g", user_id=random_user(), win_amount=3, idempotency_key=key
        ),
    )
    assert table_counts(database_url)["wins"] == 1


async def test_bad_config_is_invalid_argument_and_changes_nothing(stub: Stub) -> None:
    error = await failure(
        stub.UpdateConfig(
            pb.UpdateConfigRequest(
                group=MAJOR, contribution_rate=decimal_pb2.Decimal(value="1.5"), seed_amount=0
            ),
            metadata=ADMIN,
        )
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(error)] == ["contribution_rate", "seed_amount"]
    config = await stub.GetConfig(pb.GetConfigRequest())
    assert config.pools[1].version == 1


async def test_win_above_the_pool_is_failed_precondition(stub: Stub, database_url: str) -> None:
    user, key = random_user(), random_key("above")
    error = await failure(
        stub.Win(
            pb.WinRequest(
                group=MINOR, game_id="g", user_id=user, win_amount=10001, idempotency_key=key
            )
        )
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "exceeds" in (error.details() or "")
    pools = await stub.GetPools(pb.GetPoolsRequest())
    assert pools.pools[0].current_amount == 10000
    assert pools.pools[0].total_wins == 0
    assert table_counts(database_url) == NOTHING_WRITTEN
    # What the pool holds, with the same key, is paid once.
    await applies_once(
        stub,
        pb.WinRequest(
            group=MINOR, game_id="g", user_id=user, win_amount=10000, idempotency_key=key
        ),
    )
    assert table_counts(database_url)["wins"] == 1


async def test_stale_expected_version_is_aborted(stub: Stub) -> None:
    # Contributions move the row's version but not the config version...
    await contribute(stub, 1000)
    first = await stub.UpdateConfig(
        pb.UpdateConfigRequest(group=MINOR, seed_amount=20000, expected_version=1),
        metadata=ADMIN,
    )
    assert first.config.version == 2
    # ...a config change does, so a second writer holding version 1 loses.
    error = await failure(
        stub.UpdateConfig(
            pb.UpdateConfigRequest(group=MINOR, seed_amount=30000, expected_version=1),
            metadata=ADMIN,
        )
    )
    assert error.code() is grpc.StatusCode.ABORTED
    assert "config is at version 2, not 1" in (error.details() or "")
    pools = await stub.GetPools(pb.GetPoolsRequest())
    assert (pools.pools[0].seed_amount, pools.pools[0].config_version) == (20000, 2)


# Who may call what, and the answers to everyone else: tests/e2e/test_identity.py.


async def test_unreachable_database_is_unavailable(
    stub: Stub, server: RunningServer, admin_url: str, database_url: str
) -> None:
    keyed = pb.ContributeRequest(game_id="g", wager_amount=1000, idempotency_key=random_key("o"))
    async with database_outage(admin_url, database_url):
        for call in (
            stub.Contribute(keyed, timeout=10),
            stub.GetStatistics(pb.GetStatisticsRequest(), timeout=10),
        ):
            error = await failure(call)
            assert error.code() is grpc.StatusCode.UNAVAILABLE
            status = rpc_status.from_call(error)
            assert status is not None
            retry = error_details_pb2.RetryInfo()
            assert any(d.Unpack(retry) for d in status.details)
            assert retry.retry_delay.seconds == 1
    assert table_counts(database_url) == NOTHING_WRITTEN
    # The database is back: once the server reads again, the keyed call applies once.
    for _ in range(100):  # up to 10 s; the health probe reconnects within a second or so
        try:
            await stub.GetStatistics(pb.GetStatisticsRequest(), timeout=10)
            break
        except grpc.aio.AioRpcError as error:
            assert error.code() is grpc.StatusCode.UNAVAILABLE
            await asyncio.sleep(0.1)
    await applies_once(stub, keyed)
    assert table_counts(database_url) == {**NOTHING_WRITTEN, "contributions": 1}
