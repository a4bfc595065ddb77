"""Money and rates accept only their grammar, over the real gateway and the real server.

An int64 amount in REST JSON is a JSON integer or a string of ASCII digits with an optional
leading `-`: never a fraction (rounded to the nearest float), an exponent, `_` separators,
a `+`, whitespace or non-ASCII digits (which Python's int() reads). A rate is a
google.type.Decimal whose value follows that type's grammar in ASCII (Python's Decimal()
reads Arabic-Indic digits too), on the gRPC path as well. A refusal is 400 /
INVALID_ARGUMENT naming the field, and writes nothing.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import grpc
import pytest
from google.type import decimal_pb2
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from testkit.ledger import table_counts
from testkit.random_refs import random_user

CONTRIBUTE = "/api/jackpot/contribute"
BATCH = "/api/jackpot/contribute:batch"
WIN = "/api/jackpot/win"
CONFIG = "/api/jackpot/config"

# Raw JSON text for the value, as a client would send it (a float cannot round-trip
# through Python's json.dumps unchanged: 900719925474099.99 would become ...100.0).
LOOSE_AMOUNTS = [
    "900719925474099.99",  # was recorded as 900719925474100
    "1000.0",
    "1e3",
    "1E3",
    '"1_000"',
    '"１０００"',  # full-width digits
    '"١٠٠٠"',  # Arabic-Indic digits
    '"+1000"',
    '"\\t1000"',
    '" 1000"',
    '"1000 "',
    '"1000\\n"',
    '"1e3"',
    '"1000.0"',
    '"0x3e8"',
    '"-"',
    '""',
]

# (route, method, body with AMOUNT where the amount goes, the field the 400 names)
AMOUNT_FIELDS = [
    (CONTRIBUTE, "POST", '{"gameId": "strict", "wagerAmount": AMOUNT}', "wagerAmount"),
    (
        BATCH,
        "POST",
        '{"contributions": [{"gameId": "strict", "wagerAmount": AMOUNT}]}',
        "contributions[0].wagerAmount",
    ),
    (
        WIN,
        "POST",
        '{"group": "minor", "gameId": "strict", "userId": "USER", "winAmount": AMOUNT}',
        "winAmount",
    ),
    (CONFIG, "PUT", '{"group": "minor", "seedAmount": AMOUNT}', "seedAmount"),
    (CONFIG, "PUT", '{"group": "minor", "maxAmount": AMOUNT}', "maxAmount"),
    (CONFIG, "PUT", '{"group": "minor", "expectedVersion": AMOUNT}', "expectedVersion"),
]

LOOSE_RATES = [
    "٠.٥",  # Arabic-Indic digits: was stored as 0.5
    "０.５",  # full-width
    "0_5",
    "0.0_5",
    " 0.005",
    "0.005 ",
    "\t0.005",
    "0.005\n",
    "0,5",
    "Infinity",
    "NaN",
    "0x1",
    "--0.5",
    "0.5e",
    ".",
    "e5",
]
# The google.type.Decimal grammar allows these forms; the rate's own range checks follow.
GRAMMATICAL_RATES = [("+0.005", "0.0050000000"), (".005", "0.0050000000"), ("5E-3", "0.0050000000")]


async def _send(rest_url: str, method: str, path: str, body: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            rest_url + path,
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        return response.status, await response.json()


def _violations(body: Any) -> dict[str, str]:
    return {
        v["field"]: v["description"]
        for d in body.get("details", [])
        if d["@type"] == "type.googleapis.com/google.rpc.BadRequest"
        for v in d["fieldViolations"]
    }


@pytest.mark.parametrize(("path", "method", "template", "field"), AMOUNT_FIELDS)
async def test_loose_amounts_are_refused_naming_the_field(
    rest_url: str, database_url: str, path: str, method: str, template: str, field: str
) -> None:
    before = table_counts(database_url)
    let_through: dict[str, Any] = {}
    for amount in LOOSE_AMOUNTS:
        body = template.replace("AMOUNT", amount).replace("USER", random_user())
        json.loads(body)  # the body itself is valid JSON: only the value is wrong
        status, answer = await _send(rest_url, method, path, body)
        # INVALID_ARGUMENT naming this field, from the gateway's parse (not the service's).
        if (status, answer.get("code")) != (400, 3) or field not in _violations(answer):
            let_through[amount] = (status, answer)
    assert not let_through, (list(let_through), let_through)
    assert table_counts(database_url) == before


async def test_exact_amounts_still_pass(rest_url: str, database_url: str) -> None:
    """JSON integers and digit strings, also beyond 2^53 (json reads integers exactly)."""
    for amount in ("1000", '"1000"', '"0001000"'):
        body = '{"gameId": "strict", "wagerAmount": AMOUNT}'.replace("AMOUNT", amount)
        status, answer = await _send(rest_url, "POST", CONTRIBUTE, body)
        assert status == 200, (amount, answer)
    beyond = 2**53 + 1  # not a float: 9007199254740993 would read as ...992
    status, answer = await _send(
        rest_url, "PUT", CONFIG, f'{{"group": "mega", "maxAmount": {beyond}, "actor": "strict"}}'
    )
    assert status == 200, answer
    assert answer["config"]["maxAmount"] == str(beyond)
    status, answer = await _send(rest_url, "PUT", CONFIG, '{"group": "mega", "seedAmount": "-5"}')
    assert status == 400 and "seed_amount" in _violations(answer), answer  # the server's range
    assert table_counts(database_url)["contributions"] == 3


async def test_loose_rates_are_refused_over_rest(rest_url: str, database_url: str) -> None:
    before = table_counts(database_url)
    let_through: dict[str, Any] = {}
    for rate in LOOSE_RATES:
        body = json.dumps({"group": "minor", "contributionRate": {"value": rate}})
        status, answer = await _send(rest_url, "PUT", CONFIG, body)
        if status != 400 or "contribution_rate" not in _violations(answer):
            let_through[rate] = (status, answer.get("config", answer))
    assert not let_through, (list(let_through), let_through)
    assert table_counts(database_url) == before
    for rate, stored in GRAMMATICAL_RATES:
        body = json.dumps({"group": "minor", "contributionRate": {"value": rate}})
        status, answer = await _send(rest_url, "PUT", CONFIG, body)
        assert status == 200, (rate, answer)
        assert answer["config"]["contributionRate"]["value"] == stored


async def test_loose_rates_are_refused_over_grpc(
    stub: jackpot_pb2_grpc.JackpotServiceStub, database_url: str
) -> None:
    before = table_counts(database_url)
    (minor,) = [p for p in (await stub.GetConfig(pb.GetConfigRequest())).pools if p.group == 1]
    let_through: dict[str, str] = {}
    for rate in LOOSE_RATES:
        request = pb.UpdateConfigRequest(
            group=pb.JACKPOT_GROUP_MINOR, contribution_rate=decimal_pb2.Decimal(value=rate)
        )
        try:
            reply = await stub.UpdateConfig(request)
        except grpc.aio.AioRpcError as refused:
            if refused.code() != grpc.StatusCode.INVALID_ARGUMENT or "contribution_rate" not in (
                refused.details() or ""
            ):
                let_through[rate] = f"{refused.code()}: {refused.details()}"
        else:
            let_through[rate] = f"stored {reply.config.contribution_rate.value}"
    assert not let_through, (list(let_through), let_through)
    assert table_counts(database_url) == before
    (after,) = [p for p in (await stub.GetConfig(pb.GetConfigRequest())).pools if p.group == 1]
    assert after == minor
