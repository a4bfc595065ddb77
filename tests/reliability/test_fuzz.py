"""Fuzzing the gRPC API with hypothesis against a real server on a real database.

One `jackpot serve` child process and one database serve every example of this module
(a module fixture); each example is one call through a sync gRPC channel, with the
database looked at before and after it. Inputs: extreme and negative int64s, huge and
unicode strings (NUL, zero-width, right-to-left, combining, emoji, 1.5 M characters past
the 4 MiB message limit), bad and odd UUIDs, unknown and negative enum numbers, odd
decimals, empty messages, replayed idempotency keys, wrong and odd admin tokens.
(Lone surrogates cannot be put in a protobuf string by a client; bytes that are not valid
UTF-8 on the wire are in test_limits.py.)

The rules for every call:
- the status is one the contract allows for that RPC: never UNKNOWN, never INTERNAL;
- a refused call wrote nothing: ledger row counts, pool amounts and versions unchanged;
- an accepted call wrote exactly what it says (one ledger row, one version step, ...),
  a replay wrote nothing, and the books still balance;
- at teardown, each test's RPC was answered OK at least a set share of its examples (and
  the batches wrote items), so the checks on accepted calls cannot pass vacuously.
"""

from __future__ import annotations

import math
import string
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.type import decimal_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from testkit.calls import ADMIN_TOKEN, FORBIDDEN_CODES
from testkit.database import create_database, drop_database, unique_name
from testkit.figures import env_int, report, scale
from testkit.ledger import books_problems
from testkit.processes import ServiceProcess, serve_process


def examples(name: str, default: int) -> int:
    # At least 100: the floor of OK answers (ACCEPTED_AT_LEAST) needs enough of them.
    return env_int(f"JACKPOT_FUZZ_{name}", max(100, round(default * scale())))


FUZZ = settings(
    deadline=None,
    database=None,  # a shared server accumulates state: replaying old examples means little
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
GROUP_NUMBERS = {pb.JACKPOT_GROUP_MINOR: 0, pb.JACKPOT_GROUP_MAJOR: 1, pb.JACKPOT_GROUP_MEGA: 2}

# --- strategies --------------------------------------------------------------------------

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EDGE_INTS = [0, 1, -1, 2, 99, 100, 1000, 2**31 - 1, 2**31, -(2**31), 2**53 + 1]
EDGE_INTS += [10**15, 10**15 + 1, INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1]
int64s = st.one_of(st.integers(INT64_MIN, INT64_MAX), st.sampled_from(EDGE_INTS))
small_positive = st.integers(1, 1_000_000)

ODD_TEXTS = [
    "",
    " ",
    "\x00",
    "game\x00id",
    "\t\n\r",
    "\u200b",
    "\ufeff",
    "\u202eevil",
    "e\u0301",
    "🎰🎰",
    "Ω" * 128,
    "x" * 128,
    "x" * 129,
    " padded ",
    "'; DROP TABLE contributions; --",
    "%s %(x)s {}",
    "\\",
    "null",
    "\U0010ffff",
    "\ue000",
]
huge_texts = st.builds(
    lambda char, n: char * n,
    st.sampled_from(["x", "é", "😀", "\x00", " "]),
    # "😀" × 1.2 M is 4.8 MB: past the 4 MiB message limit (RESOURCE_EXHAUSTED from grpc)
    st.sampled_from([129, 1_000, 100_000, 1_200_000]),
)
plain_texts = st.one_of(
    st.text(max_size=40),  # any code point protobuf allows (no lone surrogates)
    st.text(alphabet=string.printable, max_size=20),
    st.sampled_from(ODD_TEXTS),
)
# Huge strings are slow to send: about one text field in 50.
texts = st.integers(0, 49).flatmap(lambda n: huge_texts if n == 0 else plain_texts)
names = st.one_of(st.text(alphabet=string.ascii_letters + "-_", min_size=1, max_size=12), texts)
KEY_POOL = [f"fuzz-key-{i}" for i in range(40)]  # small, so keys repeat and replay
keys = st.one_of(st.just(""), st.sampled_from(KEY_POOL), texts)
uuids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.uuids().map(lambda u: f"urn:uuid:{u}"),
    st.uuids().map(lambda u: f" {u}\x00"),
    st.sampled_from(
        [
            "",
            "not-a-uuid",
            str(uuid.UUID(int=0)),
            str(uuid.UUID(int=2**128 - 1)),
            "g" * 32,
            "١" * 32,  # Arabic-Indic digits: int() reads them
            "1_" * 16,
            "0" * 31,
            "0" * 33,
            "12345678-1234-5678-1234-56781234567",
        ]
    ),
    texts,
)
groups = st.one_of(st.sampled_from([0, 1, 2, 3]), st.integers(-(2**31), 2**31 - 1))
rates = st.one_of(
    st.decimals(min_value=0, max_value=1, places=10).map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(
        [
            "0",
            "1",
            "-0",
            "0.5",
            " 0.25 ",
            "1.0000000001",
            "0.00000000001",
            "1e-10",
            "1E+1001",
            "0E+1001",
            "0E-11",
            "-0.1",
            "NaN",
            "sNaN",
            "-Infinity",
            "0x1",
            "½",
            "١",
            "1_0",
            "+.5",
            "5e-1",
            "0." + "0" * 5000 + "1",
        ]
    ),
    texts,
)


@st.composite
def contribute_requests(draw: st.DrawFn) -> pb.ContributeRequest:
    if draw(st.booleans()):  # well-formed, so that many are accepted
        return pb.ContributeRequest(
            game_id=draw(names), wager_amount=draw(small_positive), idempotency_key=draw(keys)
        )
    return pb.ContributeRequest(
        game_id=draw(texts), wager_amount=draw(int64s), idempotency_key=draw(keys)
    )


contribute_messages = st.one_of(st.just(pb.ContributeRequest()), contribute_requests())


@st.composite
def batch_requests(draw: st.DrawFn) -> pb.ContributeBatchRequest:
    if draw(st.integers(0, 30)) == 0:  # over the item limit
        item = pb.ContributeRequest(game_id="g", wager_amount=1)
        return pb.ContributeBatchRequest(contributions=[item] * 5001)
    small = st.lists(contribute_messages, max_size=8)
    return pb.ContributeBatchRequest(contributions=draw(small))


@st.composite
def win_requests(draw: st.DrawFn) -> pb.WinRequest:
    if draw(st.booleans()):  # well-formed
        request = pb.WinRequest(
            group=draw(st.sampled_from(list(GROUP_NUMBERS))),
            game_id=draw(names),
            user_id=str(draw(st.uuids())),
            idempotency_key=draw(keys),
        )
        amount = draw(st.one_of(st.none(), st.integers(1, 200_000)))
    else:
        group: Any = draw(groups)  # unknown and negative numbers on purpose
        request = pb.WinRequest(
            group=group,
            game_id=draw(texts),
            user_id=draw(uuids),
            idempotency_key=draw(keys),
        )
        amount = draw(st.one_of(st.none(), int64s))
    if amount is not None:
        request.win_amount = amount
    return request


AUTH = [
    ((("authorization", f"Bearer {ADMIN_TOKEN}"),), 6),
    ((), 1),
    ((("authorization", "Bearer wrong-token"),), 1),
    ((("authorization", f"bearer   {ADMIN_TOKEN}  "),), 1),
    ((("authorization", f"Basic {ADMIN_TOKEN}"),), 1),
    ((("authorization", "Bearer"),), 1),
    ((("authorization", "Bearer "),), 1),
    ((("authorization", f"Bearer {ADMIN_TOKEN}x"),), 1),
]
metadata = st.sampled_from([m for m, weight in AUTH for _ in range(weight)])


@st.composite
def config_requests(draw: st.DrawFn) -> tuple[pb.UpdateConfigRequest, Any]:
    valid = draw(st.booleans())
    group: Any = draw(st.sampled_from(list(GROUP_NUMBERS)) if valid else groups)
    request = pb.UpdateConfigRequest(
        group=group,
        clear_max_amount=draw(st.booleans()) if not valid else False,
        actor=draw(names),
        reason=draw(texts),
    )
    rate = draw(st.one_of(st.none(), rates))
    if valid and rate is not None:
        rate = str(draw(st.decimals(min_value=0, max_value="0.05", places=6)))
    if rate is not None:
        request.contribution_rate.CopyFrom(decimal_pb2.Decimal(value=rate))
    seed = draw(st.one_of(st.none(), st.integers(1, 10**7) if valid else int64s))
    if seed is not None:
        request.seed_amount = seed
        if valid:
            request.max_amount = seed * draw(st.integers(2, 100))
    elif not valid and (cap := draw(st.one_of(st.none(), int64s))) is not None:
        request.max_amount = cap
    version = draw(st.one_of(st.none(), st.integers(1, 40), int64s))
    if version is not None:
        request.expected_version = version
    return request, draw(metadata)


# --- the target --------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    contributions: int
    wins: int
    seed_fundings: int
    config_audit: int
    versions: tuple[int, int, int]
    amounts: tuple[int, int, int]
    config_versions: tuple[int, int, int]


@dataclass
class Target:
    stub: jackpot_pb2_grpc.JackpotServiceStub
    conn: psycopg.Connection[Any]
    process: ServiceProcess
    seen: dict[str, Counter[str]] = field(default_factory=dict)
    fresh_batch_items: int = 0  # batch items written (not replayed, not rejected)

    def snapshot(self) -> Snapshot:
        row = self.conn.execute(
            """SELECT (SELECT count(*) FROM contributions), (SELECT count(*) FROM wins),
                      (SELECT count(*) FROM seed_fundings), (SELECT count(*) FROM config_audit),
                      array_agg(version ORDER BY lock_order),
                      array_agg(current_amount ORDER BY lock_order),
                      array_agg(config_version ORDER BY lock_order)
               FROM jackpots"""
        ).fetchone()
        assert row is not None
        return Snapshot(*row[:4], *(tuple(r) for r in row[4:]))

    def call(
        self, method: str, request: Any, allowed: set[str], metadata: Any = ()
    ) -> tuple[str, Any, Snapshot, Snapshot]:
        before = self.snapshot()
        try:
            response = getattr(self.stub, method)(request, metadata=metadata, timeout=30)
            code = "OK"
        except grpc.RpcError as exc:
            response, code = None, exc.code().name
        after = self.snapshot()
        self.seen.setdefault(method, Counter())[code] += 1
        assert code not in FORBIDDEN_CODES, (method, code, self.process.log(20))
        assert code in allowed | {"OK"}, (method, code)
        if code != "OK":
            assert after == before, f"refused {method} ({code}) changed {before} -> {after}"
        return code, response, before, after

    def balanced(self) -> None:
        assert books_problems(self.conn) == []


@pytest.fixture(scope="module")
def target(
    admin_url: str, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    name = unique_name("jackpot_fuzz")
    url = create_database(admin_url, name, template=template_database)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        # Durability is not under test here (test_process_kill and test_database_crash
        # have it); without a flush per commit the fuzzer runs several times more inputs.
        admin.execute(f"ALTER DATABASE {name} SET synchronous_commit = off")
    log_dir: Path = tmp_path_factory.mktemp("fuzz")
    process = serve_process(url, log_dir)
    try:
        process.start()
        with (
            grpc.insecure_channel(process.target) as channel,
            psycopg.connect(url, autocommit=True) as conn,
        ):
            fuzz = Target(jackpot_pb2_grpc.JackpotServiceStub(channel), conn, process)
            yield fuzz
            fuzz.balanced()
            report("fuzz", {m: dict(c) for m, c in fuzz.seen.items()})
        assert process.stop() == 0, process.log()
    finally:
        process.stop()
        drop_database(admin_url, name)


def stepped(before: Snapshot, after: Snapshot, groups: set[int]) -> bool:
    """Exactly the pools in `groups` moved one version."""
    return all(
        a - b == (1 if i in groups else 0)
        for i, (b, a) in enumerate(zip(before.versions, after.versions, strict=True))
    )


# --- the tests ---------------------------------------------------------------------------

CONTRIBUTE_EXAMPLES = examples("CONTRIBUTE", 3000)
BATCH_EXAMPLES = examples("BATCH", 750)
WIN_EXAMPLES = examples("WIN", 2000)
CONFIG_EXAMPLES = examples("CONFIG", 2000)
# test -> (its RPC, its examples, the share of them that must be answered OK): about a
# third of what a run sees (Contribute ~32 %, ContributeBatch ~99 %, Win and UpdateConfig
# ~17 %: most inputs are malformed on purpose).
ACCEPTED_AT_LEAST = {
    "test_fuzz_contribute": ("Contribute", CONTRIBUTE_EXAMPLES, 0.10),
    "test_fuzz_contribute_batch": ("ContributeBatch", BATCH_EXAMPLES, 0.30),
    "test_fuzz_win": ("Win", WIN_EXAMPLES, 0.05),
    "test_fuzz_update_config": ("UpdateConfig", CONFIG_EXAMPLES, 0.05),
}


def ok_answers(target: Target, method: str) -> int:
    return target.seen.get(method, Counter())["OK"]


@pytest.fixture(autouse=True)
def enough_accepted(target: Target, request: pytest.FixtureRequest) -> Iterator[None]:
    """At teardown: the test's RPC was answered OK at least its set number of times."""
    method, count, share = ACCEPTED_AT_LEAST[request.node.originalname]
    floor = math.ceil(count * share)
    before, items_before = ok_answers(target, method), target.fresh_batch_items
    yield
    accepted = ok_answers(target, method) - before
    assert accepted >= floor, f"{method}: {accepted} OK answers of {count}, fewer than {floor}"
    if method == "ContributeBatch":  # OK answers that wrote items, not only item errors
        items = target.fresh_batch_items - items_before
        assert items >= floor, f"{method}: {items} items written, fewer than {floor}"


BAD_INPUT = {"INVALID_ARGUMENT"}
TOO_BIG = {"RESOURCE_EXHAUSTED"}  # grpc's own 4 MiB receive limit
KEY_REUSED = {"FAILED_PRECONDITION"}  # a recurring key drawn with another request


@settings(FUZZ, max_examples=CONTRIBUTE_EXAMPLES)
@given(request=contribute_messages)
def test_fuzz_contribute(target: Target, request: pb.ContributeRequest) -> None:
    code, reply, before, after = target.call(
        "Contribute", request, BAD_INPUT | TOO_BIG | KEY_REUSED
    )
    if code != "OK":
        return
    assert reply.total_contribution == sum(c.amount for c in reply.contributions)
    assert all(c.amount >= 0 for c in reply.contributions)
    if reply.replayed:
        assert after == before
    else:
        assert after.contributions == before.contributions + 1
        assert (after.wins, after.seed_fundings, after.config_audit) == (
            before.wins,
            before.seed_fundings,
            before.config_audit,
        )
        assert stepped(before, after, {0, 1, 2})
    row = target.conn.execute(
        "SELECT minor_amount + major_amount + mega_amount FROM contributions WHERE id = %s",
        (reply.contribution_id,),
    ).fetchone()
    assert row is not None and row[0] == reply.total_contribution
    target.balanced()


@settings(FUZZ, max_examples=BATCH_EXAMPLES)
@given(request=batch_requests())
def test_fuzz_contribute_batch(target: Target, request: pb.ContributeBatchRequest) -> None:
    code, reply, before, after = target.call("ContributeBatch", request, BAD_INPUT | TOO_BIG)
    if code != "OK":
        return
    assert len(reply.results) == len(request.contributions)
    counts = reply.applied_count + reply.replayed_count + reply.rejected_count
    assert counts == len(request.contributions)
    errors = [r.error for r in reply.results if r.HasField("error")]
    assert len(errors) == reply.rejected_count
    bad_input = (grpc.StatusCode.INVALID_ARGUMENT.value[0], "INVALID_REQUEST")
    key_reused = (grpc.StatusCode.FAILED_PRECONDITION.value[0], "IDEMPOTENCY_KEY_REUSED")
    assert all(
        ((e.code, e.reason) == bad_input and e.field) or (e.code, e.reason) == key_reused
        for e in errors
    )
    fresh = sum(1 for r in reply.results if r.HasField("result") and not r.result.replayed)
    assert fresh == reply.applied_count
    target.fresh_batch_items += fresh
    assert after.contributions == before.contributions + fresh
    assert (after.wins, after.seed_fundings, after.config_audit) == (
        before.wins,
        before.seed_fundings,
        before.config_audit,
    )
    assert stepped(before, after, {0, 1, 2} if fresh else set())
    target.balanced()


@settings(FUZZ, max_examples=WIN_EXAMPLES)
@given(request=st.one_of(st.just(pb.WinRequest()), win_requests()))
def test_fuzz_win(target: Target, request: pb.WinRequest) -> None:
    code, reply, before, after = target.call(
        "Win", request, BAD_INPUT | TOO_BIG | {"FAILED_PRECONDITION"}
    )
    if code != "OK":
        return
    assert reply.actual_win_amount > 0
    assert reply.remaining_amount >= 0
    if reply.replayed:
        assert after == before
        return
    index = GROUP_NUMBERS[request.group]
    assert after.wins == before.wins + 1
    assert after.seed_fundings == before.seed_fundings + (1 if reply.seed_top_up else 0)
    assert (after.contributions, after.config_audit) == (before.contributions, before.config_audit)
    assert stepped(before, after, {index})
    assert after.amounts[index] == reply.remaining_amount
    if request.HasField("win_amount"):
        assert reply.actual_win_amount == request.win_amount
    else:
        assert reply.actual_win_amount == before.amounts[index]
    target.balanced()


@settings(FUZZ, max_examples=CONFIG_EXAMPLES)
@given(case=st.one_of(st.just((pb.UpdateConfigRequest(), ())), config_requests()))
def test_fuzz_update_config(target: Target, case: tuple[pb.UpdateConfigRequest, Any]) -> None:
    request, metadata = case
    allowed = BAD_INPUT | TOO_BIG | {"ABORTED", "UNAUTHENTICATED", "PERMISSION_DENIED"}
    code, reply, before, after = target.call("UpdateConfig", request, allowed, metadata)
    if code != "OK":
        return
    index = GROUP_NUMBERS[request.group]
    assert after.config_audit == before.config_audit + 1
    assert (after.contributions, after.wins, after.seed_fundings) == (
        before.contributions,
        before.wins,
        before.seed_fundings,
    )
    assert stepped(before, after, {index})
    assert reply.config.version == after.config_versions[index]
    assert after.config_versions[index] == before.config_versions[index] + 1
    assert after.amounts == before.amounts  # a config change moves no money
    target.balanced()
