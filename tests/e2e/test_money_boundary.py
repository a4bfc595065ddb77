"""Issue 11's defects, each against a real server on real PostgreSQL (and the real REST
gateway where the defect is REST's): one key means one request, REST says what it does,
no money from nowhere, no aggregate can break a read."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import uuid
from decimal import Decimal
from typing import Any

import aiohttp
import grpc
import psycopg
import pytest
from google.type import decimal_pb2
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc
from psycopg.types.json import Jsonb

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer, start_server
from testkit.calls import amounts
from testkit.calls import error_reason as reason
from testkit.gateways import gateway_to
from testkit.ledger import table_counts

Stub = jackpot_pb2_grpc.JackpotServiceStub
ADMIN = (("authorization", "Bearer test-admin-token"),)
INT64_MAX = 2**63 - 1


async def failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    return exc.value


def win(
    group: pb.JackpotGroup.ValueType = pb.JACKPOT_GROUP_MINOR, user: str = "", **fields: Any
) -> pb.WinRequest:
    return pb.WinRequest(group=group, game_id="slots", user_id=user or str(uuid.uuid4()), **fields)


def ledger_rows(url: str) -> tuple[int, int, list[int]]:
    with psycopg.connect(url) as conn:
        (contributions,) = conn.execute("SELECT count(*) FROM contributions").fetchone() or (0,)
        (wins,) = conn.execute("SELECT count(*) FROM wins").fetchone() or (0,)
        pools = [
            r[0] for r in conn.execute("SELECT current_amount FROM jackpots ORDER BY lock_order")
        ]
    return contributions, wins, pools


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


def json_reason(body: Any) -> str | None:
    return next(
        (d["reason"] for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")),
        None,
    )


def json_fields(body: Any) -> list[str]:
    return [
        v["field"]
        for d in body["details"]
        if d["@type"].endswith("google.rpc.BadRequest")
        for v in d["fieldViolations"]
    ]


# --- 1. a key reused with another request ---------------------------------------------------


async def test_contribute_key_reused_with_another_request_is_refused(
    stub: Stub, database_url: str
) -> None:
    first = await stub.Contribute(
        pb.ContributeRequest(game_id="slots", wager_amount=1000, idempotency_key="k-1")
    )
    again = await stub.Contribute(
        pb.ContributeRequest(game_id="slots", wager_amount=1000, idempotency_key="k-1")
    )
    assert again.replayed and again.contribution_id == first.contribution_id
    before = ledger_rows(database_url)
    for other in (
        pb.ContributeRequest(game_id="slots", wager_amount=2000, idempotency_key="k-1"),
        pb.ContributeRequest(game_id="poker", wager_amount=1000, idempotency_key="k-1"),
    ):
        error = await failure(stub.Contribute(other))
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert reason(error) == "IDEMPOTENCY_KEY_REUSED"
        assert "'k-1'" in (error.details() or "")
    assert ledger_rows(database_url) == before  # nothing written


async def test_win_key_reused_for_another_group_or_user_is_refused(
    stub: Stub, database_url: str
) -> None:
    user = str(uuid.uuid4())
    first = await stub.Win(win(user=user, win_amount=5, idempotency_key="w-1"))
    replay = await stub.Win(win(user=user, win_amount=5, idempotency_key="w-1"))
    assert replay.replayed and replay.win_id == first.win_id
    before = ledger_rows(database_url)
    for other in (
        win(group=pb.JACKPOT_GROUP_MAJOR, user=user, win_amount=5, idempotency_key="w-1"),
        win(user=str(uuid.uuid4()), win_amount=5, idempotency_key="w-1"),
        win(user=user, idempotency_key="w-1"),  # the whole pool instead of 5
    ):
        error = await failure(stub.Win(other))
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert reason(error) == "IDEMPOTENCY_KEY_REUSED"
    assert ledger_rows(database_url) == before


async def test_concurrent_contributes_sharing_a_key_write_once(
    stub: Stub, database_url: str
) -> None:
    """Calls batched together by the group commit follow the batch's rules: of several
    racing calls with one key, one is written; the same request replays it, another is
    refused."""
    requests = [
        pb.ContributeRequest(
            game_id="slots", wager_amount=1000 * (1 + i % 2), idempotency_key="race"
        )
        for i in range(8)
    ]
    answers = await asyncio.gather(*(stub.Contribute(r) for r in requests), return_exceptions=True)
    written = [a for a in answers if isinstance(a, pb.ContributeResponse) and not a.replayed]
    assert len(written) == 1
    wager = 1000 if written[0].total_contribution == 10 else 2000
    for request, answer in zip(requests, answers, strict=True):
        if request.wager_amount == wager:
            assert isinstance(answer, pb.ContributeResponse)
            assert answer.contribution_id == written[0].contribution_id
        else:
            assert isinstance(answer, grpc.aio.AioRpcError)
            assert reason(answer) == "IDEMPOTENCY_KEY_REUSED"
    assert ledger_rows(database_url)[0] == 1


async def test_concurrent_wins_sharing_a_key_pay_once(stub: Stub, database_url: str) -> None:
    users = [str(uuid.uuid4()) for _ in range(6)]
    answers = await asyncio.gather(
        *(stub.Win(win(user=u, win_amount=3, idempotency_key="w-race")) for u in users),
        return_exceptions=True,
    )
    paid = [a for a in answers if isinstance(a, pb.WinResponse)]
    assert len(paid) == 1 and not paid[0].replayed
    refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert [reason(e) for e in refused] == ["IDEMPOTENCY_KEY_REUSED"] * 5
    assert ledger_rows(database_url)[1] == 1


# --- 2. a key repeated inside one batch ------------------------------------------------------


async def test_batch_key_repeated_with_another_wager_is_an_item_error(
    stub: Stub, database_url: str
) -> None:
    reply = await stub.ContributeBatch(
        pb.ContributeBatchRequest(
            contributions=[
                pb.ContributeRequest(game_id="slots", wager_amount=1000, idempotency_key="b"),
                pb.ContributeRequest(game_id="slots", wager_amount=5000, idempotency_key="b"),
                pb.ContributeRequest(game_id="slots", wager_amount=1000, idempotency_key="b"),
                pb.ContributeRequest(game_id="slots", wager_amount=700),
            ]
        )
    )
    assert (reply.applied_count, reply.replayed_count, reply.rejected_count) == (2, 1, 1)
    kinds = [r.WhichOneof("outcome") for r in reply.results]
    assert kinds == ["result", "error", "result", "result"]
    error = reply.results[1].error
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION.value[0],
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert reply.results[2].result.replayed
    assert reply.results[2].result.contribution_id == reply.results[0].result.contribution_id
    assert ledger_rows(database_url)[0] == 2

    again = await stub.ContributeBatch(
        pb.ContributeBatchRequest(
            contributions=[
                pb.ContributeRequest(game_id="slots", wager_amount=1000, idempotency_key="b"),
                pb.ContributeRequest(game_id="slots", wager_amount=1, idempotency_key="b"),
            ]
        )
    )
    assert (again.applied_count, again.replayed_count, again.rejected_count) == (0, 1, 1)
    assert ledger_rows(database_url)[0] == 2


# --- 3. REST Idempotency-Key ----------------------------------------------------------------


async def test_rest_idempotency_key_header_is_never_ignored(
    rest_url: str, http: aiohttp.ClientSession, database_url: str
) -> None:
    async def contribute(body: dict[str, Any], key: str) -> tuple[int, Any]:
        return await call(
            http,
            "POST",
            f"{rest_url}/api/jackpot/contribute",
            json=body,
            headers={"Idempotency-Key": key},
        )

    batch = {"contributions": [{"gameId": "slots", "wagerAmount": "1000"}]}
    status, body = await call(
        http,
        "POST",
        f"{rest_url}/api/jackpot/contribute:batch",
        json=batch,
        headers={"Idempotency-Key": "batch-1"},
    )
    assert status == 400 and json_fields(body) == ["Idempotency-Key"]
    assert json_reason(body) == "INVALID_REQUEST"
    status, body = await call(
        http,
        "PUT",
        f"{rest_url}/api/jackpot/config",
        json={"group": "minor", "seedAmount": "20000"},
        headers={"Idempotency-Key": "cfg-1", "Authorization": "Bearer test-admin-token"},
    )
    assert status == 400 and json_fields(body) == ["Idempotency-Key"]

    in_body = {"gameId": "slots", "wagerAmount": "1000", "idempotencyKey": "body-key"}
    status, body = await contribute(in_body, "header-key")
    assert status == 400 and json_fields(body) == ["Idempotency-Key"]
    assert ledger_rows(database_url)[0] == 0

    # Agreeing header and body, or the header alone, is the key.
    status, first = await contribute(in_body, "body-key")
    assert status == 200 and not first["replayed"]
    plain = {"gameId": "slots", "wagerAmount": "1000"}
    status, replay = await contribute(plain, "body-key")
    assert status == 200 and replay["replayed"]
    assert replay["contributionId"] == first["contributionId"]

    # Reused for another request: 422, with the reason passed through.
    status, body = await contribute({"gameId": "slots", "wagerAmount": "999"}, "body-key")
    assert status == 422, body
    assert body["code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert json_reason(body) == "IDEMPOTENCY_KEY_REUSED"
    assert ledger_rows(database_url)[0] == 1


# --- 4. unknown JSON fields ------------------------------------------------------------------


async def test_rest_unknown_fields_are_refused_by_name(
    rest_url: str, http: aiohttp.ClientSession, database_url: str
) -> None:
    before = ledger_rows(database_url)
    typo = {"group": "minor", "gameId": "slots", "userId": str(uuid.uuid4()), "amount": "5"}
    status, body = await call(http, "POST", f"{rest_url}/api/jackpot/win", json=typo)
    assert status == 400, body
    assert json_fields(body) == ["amount"] and "amount" in body["message"]
    assert "Available Fields" not in body["message"]
    nested = {"contributions": [{"gameId": "slots", "wagerAmount": "1", "wager": "1"}]}
    status, body = await call(http, "POST", f"{rest_url}/api/jackpot/contribute:batch", json=nested)
    assert status == 400 and json_fields(body) == ["contributions[0].wager"]
    status, body = await call(http, "GET", f"{rest_url}/api/jackpot/pools?group=minor")
    assert status == 400 and json_fields(body) == ["group"]
    status, body = await call(
        http,
        "POST",
        f"{rest_url}/api/jackpot/contribute?dryRun=true",
        json={"gameId": "slots", "wagerAmount": "1"},
    )
    assert status == 400 and json_fields(body) == ["dryRun"]
    assert ledger_rows(database_url) == before


# --- 5. rates that create money --------------------------------------------------------------


async def test_rates_may_not_sum_above_one(stub: Stub, database_url: str) -> None:
    def raise_rate(group: pb.JackpotGroup.ValueType, rate: str) -> Any:
        request = pb.UpdateConfigRequest(
            group=group, contribution_rate=decimal_pb2.Decimal(value=rate), actor="t"
        )
        return stub.UpdateConfig(request, metadata=ADMIN)

    await raise_rate(pb.JACKPOT_GROUP_MINOR, "0.995")  # 0.995 + 0.003 + 0.002 = 1
    before = (await stub.GetConfig(pb.GetConfigRequest()), table_counts(database_url))
    error = await failure(raise_rate(pb.JACKPOT_GROUP_MAJOR, "1"))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason(error) == "RATE_SUM_EXCEEDED"
    assert "contribution_rate" in (error.details() or "")
    configs = await stub.GetConfig(pb.GetConfigRequest())
    assert [c.contribution_rate.value for c in configs.pools] == [
        "0.9950000000",
        "0.0030000000",
        "0.0020000000",
    ]
    # The refused change wrote nothing: no audit row, no version step.
    assert (configs, table_counts(database_url)) == before

    # Shares of a 1,000 wager at 0.995 / 0.003 / 0.002: exactly 995, 3 and 2 (the pools are
    # far under their caps), the whole wager; its keyed retry replays, writing nothing more.
    request = pb.ContributeRequest(game_id="slots", wager_amount=1000, idempotency_key="r-1")
    reply = await stub.Contribute(request)
    assert (amounts(reply), reply.total_contribution, reply.replayed) == ((995, 3, 2), 1000, False)
    written = table_counts(database_url)
    again = await stub.Contribute(request)
    assert (amounts(again), again.replayed, again.contribution_id) == (
        (995, 3, 2),
        True,
        reply.contribution_id,
    )
    assert table_counts(database_url) == written

    # The refused change, retried within the bound at the version it read, applies once:
    # the same retry again meets a moved version.
    major = configs.pools[1]
    retry = pb.UpdateConfigRequest(
        group=pb.JACKPOT_GROUP_MAJOR,
        contribution_rate=decimal_pb2.Decimal(value="0.001"),
        expected_version=major.version,
        actor="t",
    )
    applied = await stub.UpdateConfig(retry, metadata=ADMIN)
    assert applied.config.version == major.version + 1
    assert (await failure(stub.UpdateConfig(retry, metadata=ADMIN))).code() is (
        grpc.StatusCode.ABORTED
    )
    assert table_counts(database_url)["config_audit"] == written["config_audit"] + 1

    # The database refuses it too, whoever writes.
    with psycopg.connect(database_url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE jackpots SET contribution_rate = 1 WHERE jackpot_group = 'mega'")
        conn.commit()
    # Lowering a rate is always allowed.
    await raise_rate(pb.JACKPOT_GROUP_MINOR, "0.5")


async def test_an_operator_bound_lowers_the_limit(settings: Settings, database_url: str) -> None:
    bounded = dataclasses.replace(
        settings, service=dataclasses.replace(settings.service, max_rate_sum=Decimal("0.02"))
    )
    running = await start_server(bounded, database_url, port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = Stub(channel)
            request = pb.UpdateConfigRequest(
                group=pb.JACKPOT_GROUP_MEGA,
                contribution_rate=decimal_pb2.Decimal(value="0.0121"),
            )
            error = await failure(stub.UpdateConfig(request, metadata=ADMIN))
            assert reason(error) == "RATE_SUM_EXCEEDED"
            assert "above the limit of 0.02" in (error.details() or "")
            request.contribution_rate.value = "0.012"
            await stub.UpdateConfig(request, metadata=ADMIN)
    finally:
        await running.stop(grace=1.0)


# --- 6. aggregates beyond int64 -------------------------------------------------------------


def write_books_beyond_int64(url: str) -> tuple[int, int]:
    """Balanced books whose lifetime sums pass int64: three wagers of INT64_MAX, each pool
    contributed half of one (rate 0.5, no cap) and paid it out again (so every pool still
    holds its seed). Written directly, as the service writes rows, so the audit re-proves
    every one: reaching them through the API would take billions of calls."""
    share = INT64_MAX // 2
    groups = ("minor", "major", "mega")
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE jackpots SET max_amount = NULL")
        current: dict[str, int] = dict(
            conn.execute("SELECT jackpot_group, current_amount FROM jackpots")
        )
        in_force: dict[str, Decimal] = dict(
            conn.execute("SELECT jackpot_group, contribution_rate FROM jackpots")
        )
        for group in groups:
            amounts = {g: share if g == group else 0 for g in groups}
            rates = {g: Decimal("0.5") if g == group else Decimal(0) for g in groups}
            after = {g: current[g] + amounts[g] for g in groups}
            for g in groups:  # each rate a row records was in force: its change is recorded
                if rates[g] != in_force[g]:
                    conn.execute(
                        "INSERT INTO config_audit (jackpot_group, actor, before, after)"
                        " VALUES (%s, 'test', %s, %s)",
                        (
                            g,
                            Jsonb({"contribution_rate": str(in_force[g])}),
                            Jsonb({"contribution_rate": str(rates[g])}),
                        ),
                    )
                    in_force[g] = rates[g]
            conn.execute(
                """INSERT INTO contributions (client, game_id, wager_amount, minor_amount,
                       major_amount, mega_amount, minor_after, major_after, mega_after,
                       minor_rate, major_rate, mega_rate)
                   VALUES ('test', 'slots', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (
                    INT64_MAX,
                    *(amounts[g] for g in groups),
                    *(after[g] for g in groups),
                    *(rates[g] for g in groups),
                ),
            )
            conn.execute(
                # A win of the share asked for (a whole-pool win would pay all of it).
                """INSERT INTO wins (client, jackpot_group, game_id, user_id, requested_amount,
                       amount, pool_before, seed_top_up, pool_after)
                   VALUES ('test', %s, 'slots', %s, %s, %s, %s, 0, %s)""",
                (group, uuid.uuid4(), share, share, after[group], current[group]),
            )
        conn.execute(
            """UPDATE jackpots SET total_contributions = %s, total_contributed = %s,
                   total_wins = %s, contribution_count = 1, win_count = 1""",
            (share, share, share),
        )
        conn.execute(
            "UPDATE contribution_totals SET contribution_count = 3, total_wagered = %s",
            (3 * INT64_MAX,),
        )
    return 3 * INT64_MAX, 3 * share


async def test_reads_answer_however_large_the_lifetime_sums(
    stub: Stub,
    server: RunningServer,
    database_url: str,
    rest_url: str,
    http: aiohttp.ClientSession,
) -> None:
    wagered, contributed = write_books_beyond_int64(database_url)
    stats = await stub.GetStatistics(pb.GetStatisticsRequest())
    assert stats.total_wagered == INT64_MAX  # saturated, as documented
    assert stats.total_wagered_decimal.value == str(wagered)
    assert stats.total_contributed == INT64_MAX
    assert stats.total_contributed_decimal.value == str(contributed)
    assert stats.total_won_decimal.value == str(contributed)
    assert stats.total_pool_amount == 1_110_000
    assert stats.total_pool_amount_decimal.value == "1110000"
    assert [p.total_contributions for p in stats.pools] == [INT64_MAX // 2] * 3

    status, body = await call(http, "GET", f"{rest_url}/api/jackpot/statistics")
    assert status == 200 and body["totalWageredDecimal"] == {"value": str(wagered)}
    health = f"http://127.0.0.1:{server.health_port}/health/jackpot?audit=now"
    async with http.get(health) as response:
        jackpot = await response.json()
        assert response.status == 200, jackpot
    assert jackpot["pools_readable"]


# --- 8. the smaller ones ---------------------------------------------------------------------


async def test_keys_and_user_ids_are_taken_exactly_as_sent(
    stub: Stub, rest_url: str, http: aiohttp.ClientSession, database_url: str
) -> None:
    await stub.Contribute(
        pb.ContributeRequest(game_id="slots", wager_amount=1000, idempotency_key="k-1")
    )
    error = await failure(
        stub.Contribute(
            pb.ContributeRequest(game_id="slots", wager_amount=1000, idempotency_key=" k-1 ")
        )
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "idempotency_key" in (error.details() or "")
    error = await failure(stub.Win(win(user=f" {uuid.uuid4()} ", win_amount=1)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "user_id: must not start or end with whitespace" in (error.details() or "")
    status, body = await call(
        http,
        "POST",
        f"{rest_url}/api/jackpot/contribute",
        json={"gameId": "slots", "wagerAmount": "1", "idempotencyKey": "k-1\t"},
    )
    assert status == 400 and json_fields(body) == ["idempotency_key"]
    assert ledger_rows(database_url)[0:2] == (1, 0)


async def test_rates_are_normalised_before_they_are_stored(stub: Stub, database_url: str) -> None:
    request = pb.UpdateConfigRequest(
        group=pb.JACKPOT_GROUP_MINOR,
        contribution_rate=decimal_pb2.Decimal(value="0E+999999999"),
    )
    reply = await stub.UpdateConfig(request, metadata=ADMIN)
    assert reply.config.contribution_rate.value == "0.0000000000"
    configs = await stub.GetConfig(pb.GetConfigRequest())
    assert configs.pools[0].contribution_rate.value == "0.0000000000"
    with psycopg.connect(database_url) as conn:
        (after,) = conn.execute("SELECT after FROM config_audit").fetchone() or (None,)
    assert after["contribution_rate"] == "0.0000000000"
    request.contribution_rate.value = "1E+999999999"
    error = await failure(stub.UpdateConfig(request, metadata=ADMIN))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "between 0 and 1" in (error.details() or "")


async def test_rest_group_accepts_what_its_error_message_lists(
    rest_url: str, http: aiohttp.ClientSession
) -> None:
    payload: dict[str, str | int] = {
        "group": "jackpot",
        "gameId": "slots",
        "userId": str(uuid.uuid4()),
    }
    status, body = await call(http, "POST", f"{rest_url}/api/jackpot/win", json=payload)
    assert status == 400 and json_fields(body) == ["group"]
    assert "minor, major, mega, JACKPOT_GROUP_MINOR" in body["message"]
    for spelling in ("minor", "MAJOR", "JACKPOT_GROUP_MEGA", 1):
        payload = {
            "group": spelling,
            "gameId": "slots",
            "userId": str(uuid.uuid4()),
            "winAmount": "1",
        }
        status, body = await call(http, "POST", f"{rest_url}/api/jackpot/win", json=payload)
        assert status == 200, (spelling, body)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_rest_hides_upstream_transport_text(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async with gateway_to(f"127.0.0.1:{_closed_port()}") as gateway:
        status, body = await call(http, "GET", f"{gateway}/api/jackpot/pools")
    assert status == 503
    assert body == {"code": 14, "message": "service unavailable", "details": []}
    assert "127.0.0.1" in caplog.text  # the detail is logged, not sent
