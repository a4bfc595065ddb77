"""Inputs at the edges that the fuzzer does not reach by chance.

- Bytes that are not a valid message (invalid UTF-8 in a string field, a truncated varint,
  garbage): a client in another language, or a proxy, can send them. They must be refused
  as bad input, and write nothing.
- Valid calls that would push a pool, or its running total, past int64: a wager may be
  10^15 and a rate may be 1, so 9,224 such wagers reach 2^63 - 1. Such a call must be
  refused or clipped, never answered INTERNAL, and it must not take other callers'
  contributions down with it.
"""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest
from google.type import decimal_pb2
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from testkit.calls import ADMIN_METADATA, FORBIDDEN_CODES, Call, contribute_once, status_codes
from testkit.figures import report
from testkit.ledger import check_books, check_contributions, table_counts

BURST = 350  # concurrent Contribute calls on one connection in the int64 test


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The int64 test sends its burst on one connection, past the stream and admission
    bounds per connection (REFUSED_STREAM, RESOURCE_EXHAUSTED; tested in tests/e2e and the
    abuse suite): lifted here, this module is about amounts."""
    return dataclasses.replace(
        settings,
        grpc=dataclasses.replace(
            settings.grpc,
            max_in_flight_per_connection=2 * BURST,
            max_streams_per_connection=2 * BURST,
        ),
    )


# (method, payload, metadata): every payload is refused by the protobuf parser.
SURROGATE = b"\xed\xa0\x80"  # U+D800 encoded as if it were a character: not UTF-8
MALFORMED = [
    ("Contribute", b"\x0a\x03" + SURROGATE + b"\x10\xe8\x07", ()),  # game_id
    ("Contribute", b"\x0a\x01g\x10\xe8\x07\x1a\x02\xc3\x28", ()),  # idempotency_key
    ("Contribute", b"\x10\xff\xff", ()),  # truncated varint
    ("Contribute", b"\xff\xff\xff\xff", ()),  # garbage
    ("ContributeBatch", b"\x0a\x07\x0a\x03" + SURROGATE + b"\x10\x01", ()),  # item game_id
    ("Win", b"\x08\x01\x12\x01g\x1a\x03" + SURROGATE, ()),  # user_id
    ("UpdateConfig", b"\x08\x01\x3a\x03" + SURROGATE, ADMIN_METADATA),  # actor
]


async def test_malformed_request_bytes_are_invalid_argument(
    channel: grpc.aio.Channel, database_url: str
) -> None:
    before = table_counts(database_url)
    seen: list[tuple[str, str, str]] = []
    for method, payload, metadata in MALFORMED:
        call = channel.unary_unary(
            f"/jackpot.v1.JackpotService/{method}",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        try:
            await call(payload, metadata=metadata, timeout=10)
            seen.append((method, "OK", ""))
        except grpc.aio.AioRpcError as exc:
            seen.append((method, exc.code().name, exc.details() or ""))
    report("malformed_bytes", {"calls": [f"{m}: {c} {d[:90]}" for m, c, d in seen]})
    assert table_counts(database_url) == before, "a malformed request wrote something"
    assert all(code == "INVALID_ARGUMENT" for _, code, _ in seen), seen


async def test_pool_totals_near_int64_never_answer_internal(
    stub: jackpot_pb2_grpc.JackpotServiceStub, database_url: str
) -> None:
    # Mega takes the whole wager (a valid config: the others give theirs up first, as the
    # rates may never sum above 1), then two large valid batches.
    for group in (pb.JACKPOT_GROUP_MINOR, pb.JACKPOT_GROUP_MAJOR):
        await stub.UpdateConfig(
            pb.UpdateConfigRequest(
                group=group, contribution_rate=decimal_pb2.Decimal(value="0"), actor="limits"
            ),
            metadata=ADMIN_METADATA,
        )
    await stub.UpdateConfig(
        pb.UpdateConfigRequest(
            group=pb.JACKPOT_GROUP_MEGA,
            contribution_rate=decimal_pb2.Decimal(value="1"),
            actor="limits",
        ),
        metadata=ADMIN_METADATA,
    )
    for size in (5000, 4000):  # mega ends at ~9.0e18; int64 max is ~9.22e18
        items = [pb.ContributeRequest(game_id="whale", wager_amount=10**15)] * size
        reply = await stub.ContributeBatch(pb.ContributeBatchRequest(contributions=items))
        assert reply.applied_count == size
    assert check_books(database_url) == []

    # Now 300 more maximal wagers and 50 small ones, concurrently, through the batcher.
    big = [contribute_once(stub, f"big-{i}", 10**15) for i in range(300)]
    small = [contribute_once(stub, f"small-{i}", 1_000) for i in range(50)]
    calls: list[Call] = list(await asyncio.gather(*big, *small))
    # A ContributeBatch that crosses the limit.
    items = [pb.ContributeRequest(game_id="whale", wager_amount=10**15)] * 500
    try:
        await stub.ContributeBatch(pb.ContributeBatchRequest(contributions=items))
        batch_code = "OK"
    except grpc.aio.AioRpcError as exc:
        batch_code = exc.code().name

    codes = status_codes(c.code for c in calls)
    small_codes = status_codes(c.code for c in calls if c.key and c.key.startswith("small"))
    report(
        "int64_limit",
        {"contribute_codes": codes, "small_codes": small_codes, "batch_code": batch_code},
    )
    # Whatever happened, the books balance and every acknowledged key is in the ledger.
    assert check_books(database_url) == []
    checked = check_contributions(
        database_url,
        calls,
        all_keys_acknowledged=False,
        allow_unacknowledged_keyless=True,  # the 9,000 keyless batch items above
    )
    assert checked.problems == [], checked.problems[:10]
    # The contract: no INTERNAL, and small contributions are not taken down by big ones.
    assert not FORBIDDEN_CODES & {*codes, batch_code}, (codes, batch_code)
    assert small_codes == {"OK": 50}, small_codes
