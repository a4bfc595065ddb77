"""validate_only (AIP-163) over a real server: every write answers what it would do and
leaves the database exactly as it was; the same call for real afterwards applies once.

Each test compares the dry run's answer with the real call's, field by field (ids aside:
a dry run records none), and the database before and after the dry run (testkit
ledger_state: the pools, the totals, every ledger table's rows and amounts).
"""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import grpc
import pytest
from google.type import decimal_pb2
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.entrypoints.server import RunningServer
from testkit.calls import error_reason
from testkit.ledger_state import ledger_state

MINOR = pb.JACKPOT_GROUP_MINOR
Stub = jackpot_pb2_grpc.JackpotServiceStub


def key() -> str:
    return f"dry-{uuid.uuid4().hex}"


def contribution_answer(reply: pb.ContributeResponse) -> tuple[Any, ...]:
    """What a contribution answers, ids and time aside."""
    return (
        [(c.group, c.amount) for c in reply.contributions],
        reply.total_contribution,
        [(p.group, p.amount) for p in reply.pool_amounts],
        reply.replayed,
    )


async def test_contribute_validate_only_answers_the_real_call_and_writes_nothing(
    server: RunningServer, stub: Stub, database_url: str
) -> None:
    await stub.Contribute(pb.ContributeRequest(game_id="warm", wager_amount=500))
    batched = server.batcher.batched if server.batcher else 0
    before = ledger_state(database_url)
    request = pb.ContributeRequest(game_id="slots", wager_amount=12_345, idempotency_key=key())

    dry = await stub.Contribute(pb.ContributeRequest(**_fields(request), validate_only=True))
    # Asked again, the same key is still fresh: the dry run recorded nothing.
    again = await stub.Contribute(pb.ContributeRequest(**_fields(request), validate_only=True))

    assert ledger_state(database_url) == before
    assert (server.batcher.batched if server.batcher else 0) == batched  # never batched
    assert dry.contribution_id == 0 and not dry.replayed
    assert contribution_answer(again) == contribution_answer(dry)

    real = await stub.Contribute(request)
    assert not real.replayed and real.contribution_id > 0
    assert contribution_answer(real) == contribution_answer(dry)
    after_real = ledger_state(database_url)
    assert after_real["contributions"][0] == before["contributions"][0] + 1

    # The key is now applied: a dry run answers the replay, and a different request with
    # it is refused, exactly as real calls would be; still nothing written.
    replay = await stub.Contribute(pb.ContributeRequest(**_fields(request), validate_only=True))
    assert replay.replayed and replay.contribution_id == real.contribution_id
    reused = pb.ContributeRequest(
        game_id="slots", wager_amount=1, idempotency_key=request.idempotency_key
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Contribute(pb.ContributeRequest(**_fields(reused), validate_only=True))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused.value) == "IDEMPOTENCY_KEY_REUSED"
    assert ledger_state(database_url) == after_real


async def test_contribute_validate_only_refuses_bad_input_like_a_real_call(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Contribute(
            pb.ContributeRequest(game_id="slots", wager_amount=0, validate_only=True)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "wager_amount" in (refused.value.details() or "")


async def test_contribute_batch_validate_only_answers_the_real_batch(
    server: RunningServer, stub: Stub, database_url: str
) -> None:
    shared, applied_key = key(), key()
    await stub.Contribute(
        pb.ContributeRequest(game_id="slots", wager_amount=700, idempotency_key=applied_key)
    )
    items = [
        pb.ContributeRequest(game_id="slots", wager_amount=1000, idempotency_key=shared),
        pb.ContributeRequest(game_id="slots", wager_amount=0),  # invalid
        pb.ContributeRequest(game_id="slots", wager_amount=1000, idempotency_key=shared),
        pb.ContributeRequest(game_id="slots", wager_amount=5, idempotency_key=shared),
        pb.ContributeRequest(game_id="slots", wager_amount=700, idempotency_key=applied_key),
        pb.ContributeRequest(game_id="slots", wager_amount=250_000),
    ]
    before = ledger_state(database_url)

    dry = await stub.ContributeBatch(
        pb.ContributeBatchRequest(contributions=items, validate_only=True)
    )
    assert ledger_state(database_url) == before
    real = await stub.ContributeBatch(pb.ContributeBatchRequest(contributions=items))

    def outcome(reply: pb.ContributeBatchResponse) -> list[Any]:
        return [
            (r.error.code, r.error.reason, r.error.field)
            if r.HasField("error")
            else contribution_answer(r.result)
            for r in reply.results
        ]

    assert outcome(dry) == outcome(real)
    counts = ("applied_count", "rejected_count", "replayed_count")
    assert [getattr(dry, c) for c in counts] == [getattr(real, c) for c in counts] == [2, 2, 2]
    ids = [r.result.contribution_id for r in dry.results]
    assert ids[0] == ids[2] == ids[5] == 0 and ids[4] > 0  # only the ledger's replay has one
    assert ledger_state(database_url)["contributions"][0] == before["contributions"][0] + 2


async def test_an_item_asking_a_dry_run_inside_a_real_batch_refuses_the_batch(
    stub: Stub, database_url: str
) -> None:
    before = ledger_state(database_url)
    items = [
        pb.ContributeRequest(game_id="slots", wager_amount=1000),
        pb.ContributeRequest(game_id="slots", wager_amount=1000, validate_only=True),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ContributeBatch(pb.ContributeBatchRequest(contributions=items))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "contributions[1].validate_only" in (refused.value.details() or "")
    assert ledger_state(database_url) == before


def win_answer(reply: pb.WinResponse) -> tuple[Any, ...]:
    pool = reply.pool
    return (
        reply.actual_win_amount,
        reply.remaining_amount,
        reply.seed_top_up,
        reply.replayed,
        (pool.current_amount, pool.total_wins, pool.total_seed_funding),
        (pool.last_won_amount, pool.last_won_by_user_id, pool.version),
    )


async def test_win_validate_only_answers_the_real_win_and_writes_nothing(
    stub: Stub, database_url: str
) -> None:
    await stub.Contribute(pb.ContributeRequest(game_id="slots", wager_amount=400_000))
    before = ledger_state(database_url)
    # The whole pool: the answer includes the reset to its seed (a seed top-up row).
    request = pb.WinRequest(
        group=MINOR, game_id="slots", user_id=str(uuid.uuid4()), idempotency_key=key()
    )

    dry = await stub.Win(pb.WinRequest(**_fields(request), validate_only=True))
    assert ledger_state(database_url) == before
    assert dry.win_id == 0 and dry.seed_top_up > 0

    real = await stub.Win(request)
    assert real.win_id > 0 and not real.replayed
    assert win_answer(real) == win_answer(dry)
    after_real = ledger_state(database_url)
    assert after_real["wins"][0] == before["wins"][0] + 1

    replay = await stub.Win(pb.WinRequest(**_fields(request), validate_only=True))
    assert replay.replayed and replay.win_id == real.win_id
    other = pb.WinRequest(**_fields(request), win_amount=1, validate_only=True)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Win(other)
    assert error_reason(refused.value) == "IDEMPOTENCY_KEY_REUSED"
    assert ledger_state(database_url) == after_real


async def test_update_config_validate_only_answers_the_real_update_and_writes_nothing(
    stub: Stub, database_url: str
) -> None:
    (minor,) = [p for p in (await stub.GetConfig(pb.GetConfigRequest())).pools if p.group == MINOR]
    before = ledger_state(database_url)
    request = pb.UpdateConfigRequest(
        group=MINOR,
        contribution_rate=decimal_pb2.Decimal(value="0.0075"),
        seed_amount=minor.seed_amount + 1,
        expected_version=minor.version,
        actor="validate-only test",
        reason="dry run first",
    )

    dry = await stub.UpdateConfig(pb.UpdateConfigRequest(**_fields(request), validate_only=True))
    assert ledger_state(database_url) == before
    assert dry.audit_id == 0 and dry.config.version == minor.version + 1

    # Refused for the same reasons as a real update: the rate sum, checked under the locks.
    too_much = pb.UpdateConfigRequest(
        group=MINOR, contribution_rate=decimal_pb2.Decimal(value="1"), validate_only=True
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.UpdateConfig(too_much)
    assert error_reason(refused.value) == "RATE_SUM_EXCEEDED"

    real = await stub.UpdateConfig(request)
    assert real.audit_id > 0
    assert real.config == dry.config
    assert ledger_state(database_url)["config_audit"][0] == before["config_audit"][0] + 1


def _fields(message: Any) -> dict[str, Any]:
    """A request's set fields, to build its validate_only twin."""
    return {field.name: value for field, value in message.ListFields()}


# --- over REST: the gateway transcodes "validateOnly" like any body field -----------------


@pytest.fixture
def rest(rest_url: str) -> str:
    return rest_url


async def test_validate_only_over_rest(rest: str, database_url: str) -> None:
    before = ledger_state(database_url)
    body = {"gameId": "rest", "wagerAmount": 1000, "idempotencyKey": key()}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{rest}/api/jackpot/contribute", json={**body, "validateOnly": True}
        ) as r:
            assert r.status == 200, await r.text()
            dry = await r.json()
        assert ledger_state(database_url) == before
        async with http.post(
            f"{rest}/api/jackpot/win",
            json={
                "group": "JACKPOT_GROUP_MINOR",
                "gameId": "rest",
                "userId": str(uuid.uuid4()),
                "winAmount": "1",
                "validateOnly": True,
            },
        ) as r:
            assert r.status == 200, await r.text()
            assert int((await r.json())["actualWinAmount"]) == 1
        assert ledger_state(database_url) == before
        async with http.post(f"{rest}/api/jackpot/contribute", json=body) as r:
            assert r.status == 200, await r.text()
            real = await r.json()
    assert dry["contributionId"] == "0" and real["contributionId"] != "0"
    assert real["contributions"] == dry["contributions"]
    assert real["poolAmounts"] == dry["poolAmounts"]
    assert ledger_state(database_url)["contributions"][0] == before["contributions"][0] + 1
