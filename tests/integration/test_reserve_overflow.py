"""Reserve, overflow and resets from the reserve, over gRPC and REST against a real server and
database; `jackpot audit` proves the meters' identity and `jackpot report reconciliation`
balances the day, both in-process on the same database.

Default pools: minor seed 10,000 at 0.005, major 100,000 at 0.003, mega 1,000,000 at 0.002.
"""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2
from google.type import decimal_pb2
from grpc_status import rpc_status
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc
from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.adapters import books_audit
from jackpot_grpc.adapters.unit_of_work import Isolation, transaction
from jackpot_grpc.cli import main
from jackpot_grpc.config import Settings
from jackpot_grpc.domain.model import AuditBase, Group, LedgerAudit
from jackpot_grpc.service.reports import run_audit
from testkit.ledger_tamper import insider
from testkit.random_refs import random_game_id, random_user

pytestmark = pytest.mark.usefixtures("keep_logging")

Stub = jackpot_pb2_grpc.JackpotServiceStub
ADMIN = (("authorization", "Bearer test-admin-token"),)
REST_ADMIN = {"Authorization": "Bearer test-admin-token"}
MINOR, MAJOR, MEGA = pb.JACKPOT_GROUP_MINOR, pb.JACKPOT_GROUP_MAJOR, pb.JACKPOT_GROUP_MEGA


def by_group(items: Any) -> dict[int, int]:
    return {i.group: i.amount for i in items}


def meters(pool: pb.Pool | pb.PoolStatistics) -> dict[str, int]:
    m = pool.meters
    return {
        "current": m.current_amount,
        "contributed": m.contributed,
        "reserve": m.reserve_amount,
        "overflow": m.overflow_amount,
        "hits": m.hit_count,
        "paid": m.total_paid,
        "seed_operator": m.seed_funded_by_operator,
        "seed_reserve": m.seed_funded_from_reserve,
        "diverted_out": m.diverted_out,
        "diverted_in": m.diverted_in,
    }


def identity_gap(m: dict[str, int]) -> int:
    held = m["current"] + m["reserve"] + m["overflow"] + m["paid"] + m["diverted_out"]
    return held - (m["contributed"] + m["diverted_in"] + m["seed_operator"])


async def pool_meters(stub: Stub) -> dict[int, dict[str, int]]:
    stats = await stub.GetStatistics(pb.GetStatisticsRequest())
    return {p.group: meters(p) for p in stats.pools}


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    (_,) = [d for d in status.details if d.Unpack(bad)]
    return [(v.field, v.description) for v in bad.field_violations]


async def contribute(stub: Stub, wager: int) -> pb.ContributeResponse:
    request = pb.ContributeRequest(game_id=random_game_id(), wager_amount=wager)
    reply: pb.ContributeResponse = await stub.Contribute(request)
    return reply


def cli(monkeypatch: pytest.MonkeyPatch, url: str, *args: str) -> int:
    monkeypatch.setenv("DATABASE_URL", url)
    return main(list(args))


def around_today() -> tuple[str, str]:
    today = datetime.now(UTC).date()
    return (today - timedelta(days=1)).isoformat(), (today + timedelta(days=1)).isoformat()


def reconciled(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> tuple[int, list[dict[str, Any]]]:
    start, end = around_today()
    code = cli(monkeypatch, url, "report", "reconciliation", "--from", start, "--to", end, "--json")
    return code, json.loads(capsys.readouterr().out)["days"]


# --- gRPC: overflow kept, reserve taken, the reset paid from the reserve first -----------


async def test_overflow_accumulates_and_a_whole_pool_win_resets_from_the_reserve_first(
    stub: Stub,
    settings: Settings,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A cap just above the seed, and a reserve rate.
    update = pb.UpdateConfigRequest(
        group=MINOR,
        max_amount=10_300,
        reserve_rate=decimal_pb2.Decimal(value="0.01"),
        actor="test",
        reason="cap and reserve",
    )
    reply = await stub.UpdateConfig(update, metadata=ADMIN)
    assert reply.config.reserve_rate.value == "0.0100000000"
    assert reply.config.overflow_policy == pb.OVERFLOW_POLICY_ACCUMULATE

    first = await contribute(stub, 100_000)  # minor's 500: 300 fits, 200 overflows
    assert by_group(first.contributions) == {MINOR: 300, MAJOR: 300, MEGA: 200}
    assert by_group(first.pool_amounts)[MINOR] == 10_300
    second = await contribute(stub, 100_000)  # nothing fits: all 500 overflows
    assert by_group(second.contributions)[MINOR] == 0

    minor = (await pool_meters(stub))[MINOR]
    assert minor == {
        "current": 10_300,
        "contributed": 2 * (500 + 1_000),
        "reserve": 2_000,
        "overflow": 700,
        "hits": 0,
        "paid": 0,
        "seed_operator": 10_000,
        "seed_reserve": 0,
        "diverted_out": 0,
        "diverted_in": 0,
    }
    assert identity_gap(minor) == 0

    win = await stub.Win(pb.WinRequest(group=MINOR, game_id="slots", user_id=random_user()))
    assert (win.actual_win_amount, win.seed_top_up, win.remaining_amount) == (
        10_300,
        10_000,
        10_000,
    )
    minor = (await pool_meters(stub))[MINOR]
    assert minor["reserve"] == 0 and minor["seed_reserve"] == 2_000
    assert minor["seed_operator"] == 10_000 + 8_000 and minor["hits"] == 1
    assert minor["paid"] == 10_300 and minor["overflow"] == 700 and identity_gap(minor) == 0
    pools = await stub.GetPools(pb.GetPoolsRequest())
    (listed,) = [p for p in pools.pools if p.group == MINOR]
    assert meters(listed) == minor and listed.reserve_rate.value == "0.0100000000"

    with psycopg.connect(database_url) as conn:
        funded = conn.execute(
            "SELECT source, amount FROM seed_fundings WHERE win_id = %s ORDER BY id",
            (win.win_id,),
        ).fetchall()
        (reserve_top_up,) = conn.execute(
            "SELECT reserve_top_up FROM wins WHERE id = %s", (win.win_id,)
        ).fetchone() or (None,)
    assert funded == [("reserve", 2_000), ("operator", 8_000)]
    assert reserve_top_up == 2_000

    books = await run_audit(settings, database_url)
    assert books.balanced, books.problems()
    assert [p.identity_gap for p in books.pools] == [0, 0, 0]
    assert await asyncio.to_thread(cli, monkeypatch, database_url, "audit") == 0
    out = capsys.readouterr().out
    assert "books balance" in out
    assert [line.split()[-3] for line in out.splitlines() if line.startswith("minor")] == ["holds"]

    code, days = await asyncio.to_thread(reconciled, monkeypatch, capsys, database_url)
    assert code == 0 and len(days) == 9 and all(d["identity_holds"] for d in days)
    (today,) = [
        d
        for d in days
        if d["group"] == "minor" and d["day"] == datetime.now(UTC).date().isoformat()
    ]
    assert today["closing_display"] == today["recorded_display"] == 10_000
    assert (today["reserve_in"], today["seed_reserve"], today["overflow_in"]) == (2_000, 2_000, 700)
    assert today["contributed"] == 3_000 and today["paid"] == 10_300 and today["hits"] == 1
    start, end = around_today()
    args = ("report", "reconciliation", "--from", start, "--to", end, "--csv")
    assert await asyncio.to_thread(cli, monkeypatch, database_url, *args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("day,group,opening_display,") and len(lines) == 1 + 9
    assert lines[0].endswith(",identity_gap,identity_holds")
    assert all(line.endswith(",0,True") for line in lines[1:])
    backwards = ("report", "reconciliation", "--from", end, "--to", start)
    assert await asyncio.to_thread(cli, monkeypatch, database_url, *backwards) != 0
    assert "--to must not be before --from" in capsys.readouterr().err


async def test_the_audit_and_the_reconciliation_name_a_meter_that_moved_without_a_row(
    stub: Stub,
    settings: Settings,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    update = pb.UpdateConfigRequest(group=MAJOR, reserve_rate=decimal_pb2.Decimal(value="0.002"))
    await stub.UpdateConfig(update, metadata=ADMIN)
    await contribute(stub, 50_000)
    assert (await run_audit(settings, database_url)).balanced
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE jackpots SET reserve_amount = reserve_amount + 5 WHERE jackpot_group = 'major'"
        )
    books = await run_audit(settings, database_url)
    assert books.problems() == ["major reserve meter 105, but the ledger gives 100"]

    # A row whose reserve share is not floor(wager × reserve rate): the audit names it, and
    # the day's reconciliation no longer holds (contributed is recomputed from the rates).
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE jackpots SET reserve_amount = reserve_amount - 5 WHERE jackpot_group = 'major'"
        )
    insider(database_url, "UPDATE contributions SET major_reserve = 90")
    books = await run_audit(settings, database_url)
    assert not books.balanced
    assert any("reserve 90, but floor(50000 × 0.0020000000) = 100" in p for p in books.problems())
    code, days = await asyncio.to_thread(reconciled, monkeypatch, capsys, database_url)
    assert code == 1
    broken = [(d["group"], d["identity_gap"]) for d in days if not d["identity_holds"]]
    assert broken == [("major", -10)]


async def test_the_audit_names_a_reset_the_operator_paid_while_the_reserve_held_money(
    stub: Stub, settings: Settings, database_url: str
) -> None:
    update = pb.UpdateConfigRequest(group=MINOR, reserve_rate=decimal_pb2.Decimal(value="0.01"))
    await stub.UpdateConfig(update, metadata=ADMIN)
    await contribute(stub, 100_000)  # reserve 1,000
    win = await stub.Win(pb.WinRequest(group=MINOR, game_id="g", user_id=random_user()))
    assert (await run_audit(settings, database_url)).balanced
    # The books rewritten as if the operator had paid the whole reset: every sum agrees,
    # but the reserve held 1,000 when the reset was paid.
    insider(
        database_url,
        f"UPDATE wins SET reserve_top_up = 0 WHERE id = {win.win_id};"
        f" DELETE FROM seed_fundings WHERE win_id = {win.win_id} AND source = 'reserve';"
        f" UPDATE seed_fundings SET amount = 10000 WHERE win_id = {win.win_id};"
        " UPDATE jackpots SET reserve_amount = 1000, seed_from_reserve = 0"
        " WHERE jackpot_group = 'minor'",
    )
    books = await run_audit(settings, database_url)
    assert books.problems() == [
        f"wins #{win.win_id} [minor]: reserve top-up 0, but the reserve held 1000 and the"
        " reset needed 10000"
    ]


async def test_config_refuses_a_divert_to_itself_a_cycle_and_rates_past_the_sum(
    stub: Stub,
) -> None:
    async def refused(request: pb.UpdateConfigRequest) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.UpdateConfig(request, metadata=ADMIN)
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        return raised.value

    itself = pb.UpdateConfigRequest(group=MINOR, overflow_target=MINOR)
    assert field_violations(await refused(itself)) == [
        ("overflow_target", "must be another pool, not itself")
    ]
    no_target = pb.UpdateConfigRequest(group=MINOR, overflow_policy=pb.OVERFLOW_POLICY_DIVERT)
    assert [f for f, _ in field_violations(await refused(no_target))] == ["overflow_target"]
    unknown = pb.UpdateConfigRequest(group=MINOR, overflow_policy=7)  # type: ignore[arg-type]
    assert [f for f, _ in field_violations(await refused(unknown))] == ["overflow_policy"]

    ok = pb.UpdateConfigRequest(group=MINOR, overflow_target=MAJOR)  # a target implies DIVERT
    assert (await stub.UpdateConfig(ok, metadata=ADMIN)).config.overflow_policy == (
        pb.OVERFLOW_POLICY_DIVERT
    )
    await stub.UpdateConfig(
        pb.UpdateConfigRequest(group=MAJOR, overflow_target=MEGA), metadata=ADMIN
    )
    cycle = pb.UpdateConfigRequest(group=MEGA, overflow_target=MINOR)
    assert field_violations(await refused(cycle)) == [
        ("overflow_target", "would divert in a cycle: mega -> minor -> major -> mega")
    ]
    # Display and reserve rates share the bound: 0.005 + 0.003 + 0.002 + 0.991 > 1.
    too_much = pb.UpdateConfigRequest(group=MEGA, reserve_rate=decimal_pb2.Decimal(value="0.991"))
    error = await refused(too_much)
    assert [f for f, _ in field_violations(error)] == ["reserve_rate"]
    assert "rates would sum to 1.001" in field_violations(error)[0][1]
    back = pb.UpdateConfigRequest(group=MINOR, overflow_policy=pb.OVERFLOW_POLICY_ACCUMULATE)
    config = (await stub.UpdateConfig(back, metadata=ADMIN)).config
    assert (config.overflow_policy, config.overflow_target) == (
        pb.OVERFLOW_POLICY_ACCUMULATE,
        pb.JACKPOT_GROUP_UNSPECIFIED,
    )


# --- REST: overflow diverted to another pool --------------------------------------------


async def _json(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as response:
        return response.status, await response.json()


async def test_rest_overflow_diverts_to_the_target_pool_and_resets_from_the_reserve(
    rest_url: str, http: aiohttp.ClientSession, settings: Settings, database_url: str
) -> None:
    config = {
        "group": "minor",
        "maxAmount": "10300",
        "reserveRate": {"value": "0.01"},
        "overflowPolicy": "OVERFLOW_POLICY_DIVERT",
        "overflowTarget": "JACKPOT_GROUP_MAJOR",
    }
    status, body = await _json(
        http, "PUT", rest_url + "/api/jackpot/config", json=config, headers=REST_ADMIN
    )
    assert status == 200, body
    assert body["config"]["overflowTarget"] == "JACKPOT_GROUP_MAJOR"

    status, body = await _json(
        http,
        "POST",
        rest_url + "/api/jackpot/contribute",
        json={"gameId": "g", "wagerAmount": "100000"},
    )
    assert status == 200, body
    shares = {c["group"]: int(c["amount"]) for c in body["contributions"]}
    # minor's 500: 300 fits, 200 goes to major on top of major's own 300.
    assert shares == {
        "JACKPOT_GROUP_MINOR": 300,
        "JACKPOT_GROUP_MAJOR": 500,
        "JACKPOT_GROUP_MEGA": 200,
    }

    status, body = await _json(http, "GET", rest_url + "/api/jackpot/pools")
    assert status == 200
    found = {p["group"]: p["meters"] for p in body["pools"]}
    assert found["JACKPOT_GROUP_MINOR"]["divertedOut"] == "200"
    assert found["JACKPOT_GROUP_MINOR"]["overflowAmount"] == "0"
    assert found["JACKPOT_GROUP_MINOR"]["reserveAmount"] == "1000"
    assert found["JACKPOT_GROUP_MINOR"]["contributed"] == "1500"
    assert found["JACKPOT_GROUP_MAJOR"]["divertedIn"] == "200"
    assert found["JACKPOT_GROUP_MAJOR"]["currentAmount"] == "100500"

    win = {"group": "minor", "gameId": "g", "userId": random_user()}
    status, body = await _json(http, "POST", rest_url + "/api/jackpot/win", json=win)
    assert status == 200, body
    assert (body["actualWinAmount"], body["seedTopUp"]) == ("10300", "10000")
    status, body = await _json(http, "GET", rest_url + "/api/jackpot/statistics")
    (minor,) = [p["meters"] for p in body["pools"] if p["group"] == "JACKPOT_GROUP_MINOR"]
    assert (minor["seedFundedFromReserve"], minor["seedFundedByOperator"]) == ("1000", "19000")
    assert (minor["reserveAmount"], minor["hitCount"], minor["totalPaid"]) == ("0", "1", "10300")

    cycle = {"group": "major", "overflowTarget": "JACKPOT_GROUP_MINOR"}
    status, body = await _json(
        http, "PUT", rest_url + "/api/jackpot/config", json=cycle, headers=REST_ADMIN
    )
    assert status == 400 and "cycle" in json.dumps(body) and "overflow_target" in json.dumps(body)

    books = await run_audit(settings, database_url)
    assert books.balanced, books.problems()


# --- concurrency: wins racing contributions ---------------------------------------------


async def test_wins_racing_contributions_end_with_a_clean_audit_and_reconciliation(
    stub: Stub,
    settings: Settings,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bounded: 240 contributions (ContributeBatch and Contribute) and 12 wins, 16 in
    flight, against caps, reserves and a divert; under 60 s."""
    for request in (
        pb.UpdateConfigRequest(
            group=MINOR,
            max_amount=10_500,
            reserve_rate=decimal_pb2.Decimal(value="0.004"),
            overflow_target=MAJOR,
        ),
        pb.UpdateConfigRequest(
            group=MAJOR, max_amount=101_000, reserve_rate=decimal_pb2.Decimal(value="0.001")
        ),
    ):
        await stub.UpdateConfig(request, metadata=ADMIN)
    rng = random.Random(25)
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with gate:
            if i % 20 == 0:
                group = (MINOR, MAJOR, MEGA)[i // 20 % 3]
                await stub.Win(pb.WinRequest(group=group, game_id="race", user_id=random_user()))
            elif i % 5 == 0:
                items = [
                    pb.ContributeRequest(game_id="race", wager_amount=rng.randint(1, 300_000))
                    for _ in range(4)
                ]
                await stub.ContributeBatch(pb.ContributeBatchRequest(contributions=items))
            else:
                await contribute(stub, rng.randint(1, 300_000))

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(240))), timeout=60)
    stats = await pool_meters(stub)
    assert [identity_gap(m) for m in stats.values()] == [0, 0, 0]
    assert sum(m["hits"] for m in stats.values()) == 12
    assert stats[MINOR]["diverted_out"] == stats[MAJOR]["diverted_in"] > 0
    assert stats[MAJOR]["overflow"] > 0 and stats[MINOR]["seed_reserve"] > 0
    books = await run_audit(settings, database_url)
    assert books.balanced, books.problems()
    code, days = await asyncio.to_thread(reconciled, monkeypatch, capsys, database_url)
    assert code == 0 and all(d["identity_holds"] for d in days)


# --- with the pool lifecycle: a suspended pool's rates are 0, reserve included -----------


async def test_a_suspended_pool_takes_no_reserve_and_a_divert_into_it_is_kept(
    stub: Stub, settings: Settings, database_url: str
) -> None:
    """Minor has a reserve rate and diverts its overflow to major; major has a reserve too.
    While major is suspended it takes neither share, and minor's overflow stays on minor's
    own overflow meter (recorded as minor's); rows record the 0 rates; the audit balances,
    and names a row recording the configured reserve rate while suspended."""
    reserves: list[tuple[pb.JackpotGroup.ValueType, str, dict[str, Any]]] = [
        (MAJOR, "0.002", {}),
        (MINOR, "0.01", {"max_amount": 10_300, "overflow_target": MAJOR}),
    ]
    for group, reserve, extra in reserves:
        update = pb.UpdateConfigRequest(
            group=group,
            reserve_rate=decimal_pb2.Decimal(value=reserve),
            actor="test",
            reason="reserve",
            **extra,
        )
        await stub.UpdateConfig(update, metadata=ADMIN)
    suspended = await stub.SuspendPool(
        pb.SuspendPoolRequest(group=MAJOR, reason="maintenance"), metadata=ADMIN
    )
    assert suspended.pool.suspended

    reply = await contribute(stub, 100_000)  # minor's 500: 300 fits, 200 overflows
    assert by_group(reply.contributions) == {MINOR: 300, MAJOR: 0, MEGA: 200}
    assert list(reply.sharing_groups) == [MINOR, MEGA]
    found = await pool_meters(stub)
    assert (found[MINOR]["overflow"], found[MINOR]["diverted_out"]) == (200, 0)
    assert (found[MAJOR]["reserve"], found[MAJOR]["diverted_in"]) == (0, 0)
    assert found[MINOR]["reserve"] == 1000
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT major_rate, major_reserve_rate, major_reserve, minor_overflow,"
            " minor_overflow_to FROM contributions ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row is not None
    assert (float(row[0]), float(row[1]), row[2], row[3], row[4]) == (0, 0, 0, 200, "minor")

    await stub.ResumePool(pb.ResumePoolRequest(group=MAJOR), metadata=ADMIN)
    again = await contribute(stub, 100_000)  # resumed: the divert and major's reserve again
    assert by_group(again.contributions) == {MINOR: 0, MAJOR: 300 + 500, MEGA: 200}
    found = await pool_meters(stub)
    assert (found[MINOR]["diverted_out"], found[MAJOR]["diverted_in"]) == (500, 500)
    assert found[MAJOR]["reserve"] == 200
    for m in found.values():
        assert identity_gap(m) == 0, m
    books = await run_audit(settings, database_url)
    assert books.balanced, books.problems()

    # The suspended row claims the configured reserve rate (its share 0 kept): named.
    insider(
        database_url,
        f"UPDATE contributions SET major_reserve_rate = 0.002, major_reserve = 0"
        f" WHERE id = {reply.contribution_id}",
    )
    books = await run_audit(settings, database_url)
    problems = books.problems()
    assert any(
        f"contributions #{reply.contribution_id} [major]: reserve rate 0.0020000000, but 0 was"
        " in force" in p
        for p in problems
    ), problems


def reason_and_fields(error: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            detail.Unpack(bad)
    return info.reason, [v.field for v in bad.field_violations]


async def test_pending_reserve_rates_and_targets_count_before_they_apply_at_the_win(
    stub: Stub, settings: Settings, database_url: str
) -> None:
    """A reserve rate scheduled for the next win counts in the rate sum at once (each pool
    at the larger of its rates' sum now and after its pending change), a divert target
    scheduled for the next win counts in the cycle check, and both apply at that win."""
    # 0.005 + 0.003 + 0.002 now: a pending reserve of 0.991 on minor would pass 1.
    too_high = pb.UpdateConfigRequest(
        group=MINOR, reserve_rate=decimal_pb2.Decimal(value="0.991"), apply_at_next_win=True
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.UpdateConfig(too_high, metadata=ADMIN)
    assert reason_and_fields(refused.value) == ("RATE_SUM_EXCEEDED", ["reserve_rate"])
    scheduled = pb.UpdateConfigRequest(
        group=MINOR,
        reserve_rate=decimal_pb2.Decimal(value="0.5"),
        overflow_target=MAJOR,
        apply_at_next_win=True,
        reason="at the next win",
    )
    reply = await stub.UpdateConfig(scheduled, metadata=ADMIN)
    assert reply.config.reserve_rate.value == "0.0000000000"  # nothing changes until the win
    shown = reply.config.pending_config
    assert (shown.reserve_rate.value, shown.overflow_target) == ("0.5000000000", MAJOR)
    # An immediate reserve on major counts minor's pending 0.5: 0.505 + 0.494 + 0.002 > 1.
    raise_major = pb.UpdateConfigRequest(
        group=MAJOR, reserve_rate=decimal_pb2.Decimal(value="0.491")
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.UpdateConfig(raise_major, metadata=ADMIN)
    assert reason_and_fields(refused.value) == ("RATE_SUM_EXCEEDED", ["reserve_rate"])
    # major -> minor now would close minor's pending minor -> major: a cycle, refused.
    back = pb.UpdateConfigRequest(group=MAJOR, overflow_target=MINOR)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.UpdateConfig(back, metadata=ADMIN)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason_and_fields(refused.value)[1] == ["overflow_target"]

    before = await contribute(stub, 10_000)  # before the win: no reserve share yet
    assert (await pool_meters(stub))[MINOR]["reserve"] == 0
    assert list(before.sharing_groups) == [MINOR, MAJOR, MEGA]
    win = await stub.Win(pb.WinRequest(group=MINOR, game_id="g", user_id=random_user()))
    assert win.pool.reserve_rate.value == "0.5000000000"
    assert win.pool.overflow_target == MAJOR and not win.pool.HasField("pending_config")
    await contribute(stub, 10_000)  # after it: half of each wager to minor's reserve
    assert (await pool_meters(stub))[MINOR]["reserve"] == 5_000
    books = await run_audit(settings, database_url)
    assert books.balanced, books.problems()
    with psycopg.connect(database_url) as conn:
        (pending,) = conn.execute(
            "SELECT pending FROM pool_lifecycle WHERE action = 'schedule_config'"
        ).fetchone() or (None,)
    assert pending == {"reserve_rate": "0.5000000000", "overflow_target": "major",
                       "clear_max_amount": False}  # fmt: skip


async def _audit_from(url: str, base: AuditBase | None) -> tuple[LedgerAudit, AuditBase | None]:
    async with AsyncConnectionPool(url, min_size=1, max_size=1, open=False) as pool:
        await pool.open(wait=True, timeout=10)
        async with transaction(pool, isolation=Isolation.REPEATABLE_READ) as conn:
            return await books_audit.audit_ledger_from(conn, base)


async def test_an_incremental_audit_goes_on_from_the_reserve_and_overflow_before_it(
    stub: Stub, database_url: str
) -> None:
    """The base of an incremental audit keeps the reserve and overflow sums: a reset paid
    from reserve shares made before the base, and overflow kept before it, still prove."""
    update = pb.UpdateConfigRequest(
        group=MINOR, max_amount=10_300, reserve_rate=decimal_pb2.Decimal(value="0.01")
    )
    await stub.UpdateConfig(update, metadata=ADMIN)
    await contribute(stub, 100_000)  # reserve 1000, overflow 200: before the base
    full, base = await _audit_from(database_url, None)
    assert full.balanced and base is not None, full.problems()
    assert base.meters[Group.MINOR] == (1000, 0, 200, 0, 0)
    win = await stub.Win(pb.WinRequest(group=MINOR, game_id="g", user_id=random_user()))
    assert win.seed_top_up == 10_000  # 1000 of it from the reserve made before the base
    await contribute(stub, 1_000)
    incremental, after = await _audit_from(database_url, base)
    assert incremental.rows_from == base.head
    assert incremental.balanced, incremental.problems()
    assert after is not None and after.meters[Group.MINOR] == (1010, 1000, 200, 0, 0)
    again, _ = await _audit_from(database_url, None)
    assert again.balanced and [p.reserve_in for p in again.pools] == [
        p.reserve_in for p in incremental.pools
    ]


# --- reconciliation over rows from before overflow was kept, and across midnight ---------


async def test_the_reconciliation_takes_a_pre_overflow_capped_row_as_written(
    stub: Stub,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before overflow was kept, a share past the cap was cut to fit and the row's overflow
    is NULL. Before the fix the report recomputed floor(wager × rate) for it, so every day
    holding such a row was BROKEN (gap −200 here) though nothing was wrong."""
    await stub.UpdateConfig(
        pb.UpdateConfigRequest(group=MINOR, max_amount=10_300, actor="test", reason="cap"),
        metadata=ADMIN,
    )
    reply = await contribute(stub, 100_000)  # minor's 500: 300 fits, 200 overflows
    assert by_group(reply.contributions)[MINOR] == 300
    # The row as a release before 0014 wrote it (the pool's overflow meter is not read).
    insider(
        database_url,
        "UPDATE contributions SET minor_overflow = NULL, minor_overflow_to = NULL,"
        " major_overflow = NULL, major_overflow_to = NULL,"
        " mega_overflow = NULL, mega_overflow_to = NULL",
    )
    code, days = await asyncio.to_thread(reconciled, monkeypatch, capsys, database_url)
    assert code == 0, [d for d in days if not d["identity_holds"]]
    today = [d for d in days if d["group"] == "minor" and d["contributed"]]
    assert [(d["contributed"], d["closing_display"]) for d in today] == [(300, 10_300)]


async def test_a_row_that_began_before_midnight_but_locked_after_is_reconciled_in_order(
    stub: Stub,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """created_at is a transaction's start: a win that began at 23:59:59.9 may take the
    pool locks after a contribution that began at 00:00:00.05. Before the fix the win fell
    on the earlier day with a pool_before that held the next day's contribution, and that
    day was BROKEN; days now follow the ledger's order."""
    reply = await contribute(stub, 100_000)
    win = await stub.Win(pb.WinRequest(group=MINOR, game_id="slots", user_id=random_user()))
    assert win.actual_win_amount == 10_000 + by_group(reply.contributions)[MINOR]
    today = datetime.now(UTC).date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)
    insider(
        database_url,
        f"UPDATE contributions SET created_at = '{midnight + timedelta(milliseconds=50)}';"
        f" UPDATE wins SET created_at = '{midnight - timedelta(milliseconds=100)}';"
        f" UPDATE seed_fundings SET created_at = '{midnight - timedelta(milliseconds=100)}'"
        " WHERE win_id IS NOT NULL",
    )
    code, days = await asyncio.to_thread(reconciled, monkeypatch, capsys, database_url)
    assert code == 0, [
        d for d in days if not d["identity_holds"] or d.get("display_matches") is False
    ]
    tomorrow = [
        d for d in days if d["group"] == "minor" and d["day"] == midnight.date().isoformat()
    ]
    assert [(d["hits"], d["contributed"]) for d in tomorrow] == [(1, 500)]


async def test_a_reset_relabelled_as_from_the_reserve_it_never_had_is_broken(
    stub: Stub,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The operator's top-up relabelled `reserve` moves the same amount out of the reserve
    and out of "seed from the operator": the identity still balances. Before, the day held;
    now a reserve closing below zero is BROKEN."""
    await contribute(stub, 100_000)
    await stub.Win(pb.WinRequest(group=MINOR, game_id="slots", user_id=random_user()))
    assert (await asyncio.to_thread(reconciled, monkeypatch, capsys, database_url))[0] == 0
    insider(
        database_url,
        "UPDATE seed_fundings SET source = 'reserve' WHERE win_id IS NOT NULL",
    )
    code, days = await asyncio.to_thread(reconciled, monkeypatch, capsys, database_url)
    assert code == 1
    broken = [
        (d["group"], d["identity_gap"], d["closing_reserve"] < 0)
        for d in days
        if not d["identity_holds"]
    ]
    # Today and every later day (the negative reserve carries into their openings).
    assert broken and set(broken) == {("minor", 0, True)}
