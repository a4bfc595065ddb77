"""Hit history (ListWins), pool lifecycle (SuspendPool / ResumePool) and config changes at
the next win (UpdateConfig apply_at_next_win), over a real channel and through the real REST
gateway, on a real database; every run ends with a clean ledger audit, and the new ledger
events become leaves of the tamper-evident log that verify against a signed checkpoint."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import psycopg
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from google.type import decimal_pb2
from grpc_status import rpc_status
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer
from jackpot_grpc.ledger.leaf import EventType, decode_leaf
from jackpot_grpc.ledger.note import Signer
from jackpot_grpc.ledger.rows import leaf_of
from jackpot_grpc.service.ledger_books import audit_against_checkpoints, sign_checkpoint
from jackpot_grpc.service.reports import run_audit
from testkit.ledger_state import ledger_state
from testkit.random_refs import random_game_id, random_user

Stub = jackpot_pb2_grpc.JackpotServiceStub

ADMIN = (("authorization", "Bearer test-admin-token"),)
ADMIN_HTTP = {"Authorization": "Bearer test-admin-token"}
MINOR, MAJOR, MEGA = pb.JACKPOT_GROUP_MINOR, pb.JACKPOT_GROUP_MAJOR, pb.JACKPOT_GROUP_MEGA


async def failure(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call  # type: ignore[misc]
    return exc.value


def reason_of(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    (_,) = [d for d in status.details if d.Unpack(info)]
    return info.reason


def violated_fields(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    (_,) = [d for d in status.details if d.Unpack(bad)]
    return [v.field for v in bad.field_violations]


async def win(
    stub: Stub, group: pb.JackpotGroup.ValueType, amount: int | None = None, game: str = ""
) -> pb.WinResponse:
    request = pb.WinRequest(group=group, game_id=game or random_game_id(), user_id=random_user())
    if amount is not None:
        request.win_amount = amount
    reply: pb.WinResponse = await stub.Win(request)
    return reply


async def books_balance(settings: Settings, database_url: str) -> None:
    books = await run_audit(settings, database_url)
    assert books.balanced, books.problems()


def by_group(items: Any) -> dict[int, int]:
    return {i.group: i.amount for i in items}


# --- ListWins --------------------------------------------------------------------------------


async def test_list_wins_pages_newest_first_with_every_field(
    stub: Stub, settings: Settings, database_url: str
) -> None:
    paid = []
    for n, group in enumerate((MINOR, MAJOR, MINOR, MEGA, MINOR)):
        paid.append(await win(stub, group, 100 + n, game=f"slots-{n}"))
    pages: list[pb.ListWinsResponse] = []
    token = ""
    while True:
        page = await stub.ListWins(pb.ListWinsRequest(page_size=2, page_token=token))
        pages.append(page)
        token = page.next_page_token
        if not token:
            break
    assert [len(p.wins) for p in pages] == [2, 2, 1]
    listed = [w for p in pages for w in p.wins]
    assert [w.win_id for w in listed] == [r.win_id for r in reversed(paid)]
    times = [(w.won_at.ToDatetime(), w.win_id) for w in listed]
    assert times == sorted(times, reverse=True)
    newest = listed[0]
    assert (newest.group, newest.amount, newest.requested_amount) == (MINOR, 104, 104)
    assert newest.game_id == "slots-4" and newest.client == "anonymous"
    assert newest.user_id  # the payee
    assert newest.pool_before == paid[-1].pool.current_amount + 104 - paid[-1].seed_top_up
    assert newest.pool_after == paid[-1].remaining_amount
    assert newest.seed_funded_by_operator == paid[-1].seed_top_up == 104
    assert newest.seed_funded_from_reserve == 0
    assert newest.ledger_seq > 0
    # Its receipt, given as it was written (no checkpoint yet: not a leaf yet).
    assert newest.ledger_index == paid[-1].leaf_index > 0

    minor = await stub.ListWins(pb.ListWinsRequest(group=MINOR))
    assert [w.win_id for w in minor.wins] == [paid[4].win_id, paid[2].win_id, paid[0].win_id]
    assert minor.next_page_token == ""
    await books_balance(settings, database_url)


async def test_list_wins_filters_by_time(stub: Stub) -> None:
    first = await win(stub, MINOR, 10)
    await asyncio.sleep(0.02)
    second = await win(stub, MINOR, 11)
    split = timestamp_pb2.Timestamp()
    split.FromDatetime(first.created_at.ToDatetime() + timedelta(microseconds=1))
    older = await stub.ListWins(pb.ListWinsRequest(end_time=split))
    newer = await stub.ListWins(pb.ListWinsRequest(start_time=split))
    assert [w.win_id for w in older.wins] == [first.win_id]
    assert [w.win_id for w in newer.wins] == [second.win_id]


async def test_list_wins_refuses_bad_paging_naming_the_field(stub: Stub) -> None:
    for _ in range(3):
        await win(stub, MAJOR, 5)
    page = await stub.ListWins(pb.ListWinsRequest(group=MAJOR, page_size=1))
    assert page.next_page_token
    bad = await failure(stub.ListWins(pb.ListWinsRequest(page_token="not-a-token")))
    assert bad.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(bad) == ["page_token"]
    # A token belongs to its query: another pool is refused, not silently paged.
    other = await failure(
        stub.ListWins(pb.ListWinsRequest(group=MINOR, page_token=page.next_page_token))
    )
    assert violated_fields(other) == ["page_token"]
    negative = await failure(stub.ListWins(pb.ListWinsRequest(page_size=-1)))
    assert violated_fields(negative) == ["page_size"]
    start = timestamp_pb2.Timestamp(seconds=2_000_000_000)
    backwards = await failure(
        stub.ListWins(pb.ListWinsRequest(start_time=start, end_time=timestamp_pb2.Timestamp()))
    )
    assert violated_fields(backwards) == ["end_time"]
    huge = await stub.ListWins(pb.ListWinsRequest(page_size=1_000_000))  # cut to the max
    assert len(huge.wins) == 3 and huge.next_page_token == ""
    # The next page of a smaller page size is still the same query.
    rest = await stub.ListWins(
        pb.ListWinsRequest(group=MAJOR, page_size=5, page_token=page.next_page_token)
    )
    assert [w.win_id for w in page.wins] + [w.win_id for w in rest.wins] == [
        w.win_id for w in huge.wins
    ]


async def test_list_wins_refuses_hostile_tokens_and_times_naming_the_field(stub: Stub) -> None:
    # Deeply nested JSON in a token: before, the parser's RecursionError was INTERNAL.
    nested = base64.urlsafe_b64encode(b"[" * 5000).decode().rstrip("=")
    deep = await failure(stub.ListWins(pb.ListWinsRequest(page_token=nested)))
    assert deep.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(deep) == ["page_token"]
    # A cursor id past bigint would only fail in the database.
    doc = b'{"v":1,"q":"x","t":"2026-01-01T00:00:00+00:00","i":99999999999999999999}'
    big = base64.urlsafe_b64encode(doc).decode().rstrip("=")
    assert violated_fields(await failure(stub.ListWins(pb.ListWinsRequest(page_token=big)))) == [
        "page_token"
    ]
    # Timestamps outside Timestamp's range (0001-01-01 .. 9999-12-31): before, ToDatetime's
    # ValueError was INTERNAL.
    for field, value in (
        ("start_time", timestamp_pb2.Timestamp(seconds=10**12)),
        ("end_time", timestamp_pb2.Timestamp(seconds=-(10**12))),
        ("start_time", timestamp_pb2.Timestamp(seconds=0, nanos=2_000_000_000)),
    ):
        request = pb.ListWinsRequest()
        getattr(request, field).CopyFrom(value)
        refused = await failure(stub.ListWins(request))
        assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT, refused
        assert violated_fields(refused) == [field]


async def test_list_wins_page_size_0_is_the_default_25(stub: Stub) -> None:
    for _ in range(26):
        await win(stub, MINOR, 1)
    page = await stub.ListWins(pb.ListWinsRequest(group=MINOR, page_size=0))
    assert len(page.wins) == 25 and page.next_page_token
    rest = await stub.ListWins(pb.ListWinsRequest(group=MINOR, page_token=page.next_page_token))
    assert len(rest.wins) == 1 and rest.next_page_token == ""


async def test_list_wins_over_rest(stub: Stub, http: aiohttp.ClientSession, rest_url: str) -> None:
    paid = [await win(stub, g, 7) for g in (MINOR, MINOR, MAJOR)]
    url = rest_url + "/api/jackpot/wins"
    async with http.get(url, params={"group": "minor", "pageSize": "1"}) as response:
        assert response.status == 200
        first = await response.json()
    assert [w["winId"] for w in first["wins"]] == [str(paid[1].win_id)]
    assert first["wins"][0]["amount"] == "7" and first["wins"][0]["group"] == "JACKPOT_GROUP_MINOR"
    assert first["wins"][0]["seedFundedFromReserve"] == "0"
    assert first["nextPageToken"]
    params = {"group": "minor", "pageSize": "1", "pageToken": first["nextPageToken"]}
    async with http.get(url, params=params) as response:
        second = await response.json()
    assert [w["winId"] for w in second["wins"]] == [str(paid[0].win_id)]
    assert second["nextPageToken"] == ""
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    async with http.get(url, params={"startTime": later}) as response:
        assert (await response.json())["wins"] == []
    async with http.get(url, params={"pageToken": "garbage"}) as response:
        assert response.status == 400
        body = await response.json()
    (violation,) = [d for d in body["details"] if "fieldViolations" in d]
    assert violation["fieldViolations"][0]["field"] == "page_token"


# --- SuspendPool / ResumePool ----------------------------------------------------------------


async def test_a_suspended_pool_takes_no_share_and_refuses_wins_while_the_others_go_on(
    stub: Stub, settings: Settings, database_url: str
) -> None:
    reply = await stub.SuspendPool(
        pb.SuspendPoolRequest(group=MINOR, reason="cabinet maintenance", actor="ops"),
        metadata=ADMIN,
    )
    assert reply.pool.suspended and reply.pool.suspended_reason == "cabinet maintenance"
    assert reply.event_id > 0
    again = await stub.SuspendPool(
        pb.SuspendPoolRequest(group=MINOR, reason="twice"), metadata=ADMIN
    )
    assert again.event_id == 0 and again.pool.suspended_reason == "cabinet maintenance"

    shares = await stub.Contribute(pb.ContributeRequest(game_id="g", wager_amount=100_000))
    assert by_group(shares.contributions) == {MINOR: 0, MAJOR: 300, MEGA: 200}
    assert list(shares.sharing_groups) == [MAJOR, MEGA]
    assert by_group(shares.pool_amounts) == {MINOR: 10000, MAJOR: 100300, MEGA: 1000200}

    refused = await failure(win(stub, MINOR, 5))
    assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(refused) == "POOL_SUSPENDED"
    assert (await win(stub, MAJOR, 300)).actual_win_amount == 300  # the others go on

    pools = {p.group: p for p in (await stub.GetPools(pb.GetPoolsRequest())).pools}
    assert pools[MINOR].suspended and pools[MINOR].current_amount == 10000
    assert not pools[MAJOR].suspended and pools[MAJOR].suspended_reason == ""

    resumed = await stub.ResumePool(pb.ResumePoolRequest(group=MINOR), metadata=ADMIN)
    assert not resumed.pool.suspended and resumed.event_id > reply.event_id
    back = await stub.Contribute(pb.ContributeRequest(game_id="g", wager_amount=100_000))
    assert by_group(back.contributions) == {MINOR: 500, MAJOR: 300, MEGA: 200}
    assert list(back.sharing_groups) == [MINOR, MAJOR, MEGA]
    assert (await win(stub, MINOR, 5)).actual_win_amount == 5

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT action, jackpot_group, reason, actor, client FROM pool_lifecycle ORDER BY id"
        ).fetchall()
        rates = conn.execute("SELECT minor_rate FROM contributions ORDER BY id").fetchall()
    assert rows == [
        ("suspend", "minor", "cabinet maintenance", "ops", "anonymous"),
        ("resume", "minor", "", "unknown", "anonymous"),
    ]
    assert [r for (r,) in rates] == [0, Decimal("0.005")]  # the rate each applied
    await books_balance(settings, database_url)


async def test_suspend_needs_a_reason_and_a_pool(stub: Stub) -> None:
    # Who may call it (admin only) is tests/e2e/test_identity.py's table.
    empty = await failure(stub.SuspendPool(pb.SuspendPoolRequest(group=MINOR), metadata=ADMIN))
    assert violated_fields(empty) == ["reason"]
    nogroup = await failure(stub.SuspendPool(pb.SuspendPoolRequest(reason="x"), metadata=ADMIN))
    assert violated_fields(nogroup) == ["group"]


async def test_suspend_and_resume_over_rest(
    http: aiohttp.ClientSession, rest_url: str, settings: Settings, database_url: str
) -> None:
    base = rest_url + "/api/jackpot"
    async with http.post(
        base + "/pools/mega:suspend", json={"reason": "audit"}, headers=ADMIN_HTTP
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert body["pool"]["suspended"] is True and body["pool"]["suspendedReason"] == "audit"
    async with http.post(base + "/contribute", json={"gameId": "g", "wagerAmount": 1000}) as r:
        shares = await r.json()
    assert [c["amount"] for c in shares["contributions"]] == ["5", "3", "0"]
    assert shares["sharingGroups"] == ["JACKPOT_GROUP_MINOR", "JACKPOT_GROUP_MAJOR"]
    win_body = {"group": "mega", "gameId": "g", "userId": random_user()}
    async with http.post(base + "/win", json=win_body) as response:
        assert response.status == 400
        error = await response.json()
    assert error["code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert [d["reason"] for d in error["details"] if "reason" in d] == ["POOL_SUSPENDED"]
    async with http.get(base + "/pools") as response:
        pools = {p["group"]: p for p in (await response.json())["pools"]}
    assert pools["JACKPOT_GROUP_MEGA"]["suspended"] is True
    assert pools["JACKPOT_GROUP_MINOR"]["suspended"] is False
    async with http.post(base + "/pools/mega:resume", json={}, headers=ADMIN_HTTP) as response:
        assert response.status == 200
        assert (await response.json())["pool"]["suspended"] is False
    async with http.post(base + "/win", json=win_body) as response:
        assert response.status == 200
    await books_balance(settings, database_url)


# --- apply_at_next_win ----------------------------------------------------------------------


async def test_a_rate_scheduled_for_the_next_win_applies_exactly_at_that_win(
    stub: Stub, settings: Settings, database_url: str
) -> None:
    request = pb.UpdateConfigRequest(
        group=MINOR,
        contribution_rate=decimal_pb2.Decimal(value="0.01"),
        seed_amount=20_000,
        apply_at_next_win=True,
        actor="ops",
        reason="new cycle",
    )
    scheduled = await stub.UpdateConfig(request, metadata=ADMIN)
    assert scheduled.config.version == 1  # nothing changed yet
    assert scheduled.config.contribution_rate.value == "0.0050000000"
    pending = scheduled.config.pending_config
    assert pending.contribution_rate.value == "0.0100000000" and pending.seed_amount == 20_000
    assert pending.schedule_id == scheduled.audit_id > 0
    config = {c.group: c for c in (await stub.GetConfig(pb.GetConfigRequest())).pools}
    assert config[MINOR].pending_config.reason == "new cycle"
    pools = {p.group: p for p in (await stub.GetPools(pb.GetPoolsRequest())).pools}
    assert pools[MINOR].pending_config.schedule_id == scheduled.audit_id
    assert not pools[MAJOR].HasField("pending_config")

    before = await stub.Contribute(pb.ContributeRequest(game_id="g", wager_amount=100_000))
    assert by_group(before.contributions)[MINOR] == 500  # the old rate, until the win
    await win(stub, MAJOR, 10)  # another pool's win does not apply it
    assert (
        by_group(
            (
                await stub.Contribute(pb.ContributeRequest(game_id="g", wager_amount=100_000))
            ).contributions
        )[MINOR]
        == 500
    )

    paid = await win(stub, MINOR)  # the whole pool: 11000
    assert paid.actual_win_amount == 11_000
    assert paid.seed_top_up == 20_000 and paid.remaining_amount == 20_000  # the new seed
    assert paid.pool.contribution_rate.value == "0.0100000000"
    assert paid.pool.config_version == 2 and not paid.pool.HasField("pending_config")
    after = await stub.Contribute(pb.ContributeRequest(game_id="g", wager_amount=100_000))
    assert by_group(after.contributions)[MINOR] == 1000  # the new rate from the win on

    with psycopg.connect(database_url) as conn:
        audit_rows = conn.execute(
            "SELECT actor, reason, after->>'contribution_rate', ledger_seq FROM config_audit"
        ).fetchall()
        (win_seq,) = conn.execute(
            "SELECT ledger_seq FROM wins WHERE id = %s", (paid.win_id,)
        ).fetchone() or (None,)
        lifecycle = conn.execute("SELECT action, pending FROM pool_lifecycle").fetchall()
    ((actor, reason, rate, seq),) = audit_rows
    assert actor == "ops" and reason.endswith("new cycle") and rate == "0.0100000000"
    assert seq < win_seq  # in force for the win's own reset
    assert lifecycle == [
        (
            "schedule_config",
            {"contribution_rate": "0.0100000000", "seed_amount": 20000, "clear_max_amount": False},
        )
    ]
    await books_balance(settings, database_url)


async def test_a_dry_run_schedule_answers_the_pending_change_and_writes_nothing(
    stub: Stub, database_url: str
) -> None:
    before = ledger_state(database_url)
    request = pb.UpdateConfigRequest(
        group=MEGA, seed_amount=2_000_000, apply_at_next_win=True, validate_only=True
    )
    reply = await stub.UpdateConfig(request, metadata=ADMIN)
    assert reply.audit_id == 0 and reply.config.pending_config.seed_amount == 2_000_000
    assert ledger_state(database_url) == before
    pools = {p.group: p for p in (await stub.GetPools(pb.GetPoolsRequest())).pools}
    assert not pools[MEGA].HasField("pending_config")


async def test_scheduling_checks_the_rate_sum_and_versions(stub: Stub) -> None:
    too_high = pb.UpdateConfigRequest(
        group=MINOR, contribution_rate=decimal_pb2.Decimal(value="0.999"), apply_at_next_win=True
    )
    refused = await failure(stub.UpdateConfig(too_high, metadata=ADMIN))
    assert reason_of(refused) == "RATE_SUM_EXCEEDED"
    pending = pb.UpdateConfigRequest(
        group=MINOR, contribution_rate=decimal_pb2.Decimal(value="0.5"), apply_at_next_win=True
    )
    await stub.UpdateConfig(pending, metadata=ADMIN)
    # An immediate raise elsewhere counts the pending rate: 0.5 + 0.49 + 0.002 > 1.
    raise_major = pb.UpdateConfigRequest(
        group=MAJOR, contribution_rate=decimal_pb2.Decimal(value="0.499")
    )
    assert reason_of(await failure(stub.UpdateConfig(raise_major, metadata=ADMIN))) == (
        "RATE_SUM_EXCEEDED"
    )
    stale = pb.UpdateConfigRequest(group=MINOR, expected_version=7, apply_at_next_win=True)
    assert (await failure(stub.UpdateConfig(stale, metadata=ADMIN))).code() is (
        grpc.StatusCode.ABORTED
    )


async def test_a_change_scheduled_over_rest_shows_in_pools_and_config(
    http: aiohttp.ClientSession, rest_url: str
) -> None:
    base = rest_url + "/api/jackpot"
    change = {"group": "major", "maxAmount": "500000", "applyAtNextWin": True, "reason": "cap"}
    async with http.put(base + "/config", json=change, headers=ADMIN_HTTP) as response:
        assert response.status == 200
        body = await response.json()
    assert body["config"]["pendingConfig"]["maxAmount"] == "500000"
    assert body["config"]["maxAmount"] == "1000000"  # the cap in force until the win
    async with http.get(base + "/pools") as response:
        pools = {p["group"]: p for p in (await response.json())["pools"]}
    assert pools["JACKPOT_GROUP_MAJOR"]["pendingConfig"]["reason"] == "cap"
    assert pools["JACKPOT_GROUP_MINOR"]["pendingConfig"] is None
    async with http.get(base + "/config") as response:
        configs = {c["group"]: c for c in (await response.json())["pools"]}
    assert configs["JACKPOT_GROUP_MAJOR"]["pendingConfig"]["maxAmount"] == "500000"
    win_body = {"group": "major", "gameId": "g", "userId": random_user(), "winAmount": "1"}
    async with http.post(base + "/win", json=win_body) as response:
        assert response.status == 200
        paid = await response.json()
    assert paid["pool"]["maxAmount"] == "500000" and paid["pool"]["pendingConfig"] is None


# --- the new ledger events are leaves --------------------------------------------------------


async def test_lifecycle_events_become_leaves_that_verify_against_a_checkpoint(
    stub: Stub, server: RunningServer, database_url: str, tmp_path: Path
) -> None:
    await stub.SuspendPool(pb.SuspendPoolRequest(group=MAJOR, reason="tilt"), metadata=ADMIN)
    await stub.ResumePool(pb.ResumePoolRequest(group=MAJOR, reason="fixed"), metadata=ADMIN)
    schedule = pb.UpdateConfigRequest(
        group=MEGA, clear_max_amount=True, seed_amount=2_000_000, apply_at_next_win=True
    )
    await stub.UpdateConfig(schedule, metadata=ADMIN)
    paid = await win(stub, MEGA, 1)
    signer = Signer.generate("jackpot-ledger")
    log = tmp_path / "checkpoints.log"
    await asyncio.to_thread(sign_checkpoint, database_url, signer, log)
    result, _ = await asyncio.to_thread(
        audit_against_checkpoints, database_url, log.read_text(), signer.verifier.text()
    )
    assert result.ok, [str(f) for f in result.findings]
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT l.leaf_index AS leaf, p.* FROM pool_lifecycle p JOIN ledger_leaves l"
            " ON l.ledger_table = 'pool_lifecycle' AND l.row_id = p.id ORDER BY p.id"
        )
        names = [c.name for c in cur.description or ()]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        # The win applied the scheduled change first: its config change, the win, then the
        # reset to the new seed, on consecutive leaves in the win's transaction.
        applied = conn.execute(
            "SELECT leaf_index FROM config_audit WHERE reason LIKE 'applied at the next win%'"
        ).fetchall()
        top_up = conn.execute(
            "SELECT leaf_index FROM seed_fundings WHERE win_id = %s", (paid.win_id,)
        ).fetchall()
    assert [r["action"] for r in rows] == ["suspend", "resume", "schedule_config"]
    # Each lifecycle row claimed its index as it was written, one after the other.
    assert [r["leaf"] for r in rows] == [r["leaf_index"] for r in rows]
    assert [r["leaf_index"] - rows[0]["leaf_index"] for r in rows] == [0, 1, 2]
    assert applied == [(rows[2]["leaf_index"] + 1,)]
    assert paid.leaf_index == rows[2]["leaf_index"] + 2 and top_up == [(paid.leaf_index + 1,)]
    event, fields = decode_leaf(leaf_of("pool_lifecycle", rows[2], rows[2]["leaf_index"]))
    assert event is EventType.POOL_LIFECYCLE
    assert (fields["action"], fields["jackpot_group"]) == ("schedule_config", "mega")
    assert fields["pending_seed_amount"] == "2000000"
    assert fields["pending_clear_max_amount"] == "1"
    assert fields["pending_contribution_rate"] is None and fields["pending_max_amount"] is None
    _, suspend = decode_leaf(leaf_of("pool_lifecycle", rows[0], rows[0]["leaf_index"]))
    assert suspend["reason"] == "tilt" and suspend["pending_seed_amount"] is None
    # ListWins now names the win's leaf.
    listed = await stub.ListWins(pb.ListWinsRequest(group=MEGA))
    assert listed.wins[0].win_id == paid.win_id and listed.wins[0].HasField("ledger_index")
    with psycopg.connect(database_url) as conn:
        leaf = conn.execute(
            "SELECT leaf_index FROM ledger_leaves WHERE ledger_table = 'wins' AND row_id = %s",
            (paid.win_id,),
        ).fetchone()
    assert leaf == (listed.wins[0].ledger_index,)
