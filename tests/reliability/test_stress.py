"""Stress: many concurrent clients, retries of the same key, wins and config changes at once.

One real server (start_server on port 0, group commit on) and one real database. About
12,000 contributions from 64 concurrent callers (JACKPOT_STRESS_SCALE scales them): keyed
calls, keyless calls, resends of keys already acknowledged, keys fired twice at the same
moment, and ContributeBatch calls whose items repeat keys and carry invalid items. Wins
(given amounts and whole pools, resent and doubled keys) and UpdateConfig changes run all
along. Afterwards every answer is reconciled with the ledger and every pool with its books.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field

import grpc
import psycopg
import pytest
from google.type import decimal_pb2
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer
from testkit.calls import ADMIN_METADATA, FORBIDDEN_CODES, Call, contribute_once, status_codes
from testkit.figures import env_int, latency_ms, report, scaled
from testkit.ledger import check_books, check_contributions, table_counts

CONTRIBUTIONS = scaled(30_000, minimum=500)
KEYED_GAME = "reliability"
IN_FLIGHT = env_int("JACKPOT_STRESS_IN_FLIGHT", 64)
RETRYABLE = {"RESOURCE_EXHAUSTED", "UNAVAILABLE"}
GROUPS = (pb.JACKPOT_GROUP_MINOR, pb.JACKPOT_GROUP_MAJOR, pb.JACKPOT_GROUP_MEGA)
# At most 0.29 each, so no change can take the sum above 1 (RATE_SUM_EXCEEDED is tested
# elsewhere); 0.29 is the rate floats get wrong (100 × 0.29 = 28.999999999999996).
RATES = ("0.001", "0.0025", "0.005", "0.0075", "0.01", "0.02", "0.29")


@dataclass
class WinCall:
    key: str
    code: str
    response: pb.WinResponse | None


@dataclass
class Load:
    rng: random.Random
    stub: jackpot_pb2_grpc.JackpotServiceStub
    budget: int
    calls: list[Call] = field(default_factory=list)
    batch_answers: list[tuple[str | None, pb.ContributeResponse]] = field(default_factory=list)
    batch_codes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # (key, wager, game): a resend must be the same request to be a replay.
    acknowledged: list[tuple[str, int, str]] = field(default_factory=list)
    wins: list[WinCall] = field(default_factory=list)
    configs: list[tuple[str, pb.UpdateConfigResponse | None]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    problems: list[str] = field(default_factory=list)
    keys: itertools.count[int] = field(default_factory=itertools.count)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, n: int = 1) -> bool:
        if self.budget <= 0:
            return False
        self.budget -= n
        return True

    def fresh_key(self, kind: str = "c") -> str:
        return f"stress-{kind}-{next(self.keys)}"

    def wager(self) -> int:
        return self.rng.choice((1, 99, 100, 1000, 12_345, 10**6, self.rng.randint(1, 10**9)))

    # --- contributions -------------------------------------------------------------------

    async def keyed(self, key: str, wager: int, game: str = KEYED_GAME) -> Call:
        """Send until acknowledged; a retryable answer means: same key again, later."""
        while True:
            call = await contribute_once(self.stub, key, wager, game=game)
            self.calls.append(call)
            if call.code not in RETRYABLE:
                if call.ok:
                    self.acknowledged.append((key, wager, game))
                return call
            self.counts["retries"] += 1
            await asyncio.sleep(0.01 + self.rng.random() * 0.05)

    async def worker(self) -> None:
        while self.budget > 0:
            roll = self.rng.random()
            if roll < 0.04 and self.take():
                self.counts["keyless"] += 1
                self.calls.append(await contribute_once(self.stub, None, self.wager()))
            elif roll < 0.09 and self.acknowledged and self.take():
                self.counts["resends_of_acknowledged"] += 1
                await self.keyed(*self.rng.choice(self.acknowledged))
            elif roll < 0.12 and self.take(2):
                self.counts["concurrent_pairs"] += 1
                key, wager = self.fresh_key(), self.wager()
                await asyncio.gather(self.keyed(key, wager), self.keyed(key, wager))
            elif roll < 0.14:
                await self.batch()
            elif self.take():
                await self.keyed(self.fresh_key(), self.wager())

    async def batch(self) -> None:
        """ContributeBatch: fresh keys, a repeated key, an acknowledged key, a bad item."""
        size = self.rng.randint(3, 24)
        if not self.take(size):
            return
        self.counts["batch_calls"] += 1
        items: list[tuple[str | None, int, str]] = [
            (self.fresh_key("b"), self.wager(), "batch") for _ in range(size - 2)
        ]
        items.append(items[0])  # the same key twice in one call
        if self.acknowledged:
            # A key applied earlier, resent as the same request: a replay. (The same key
            # with another request is refused: tests/e2e/test_money_boundary.py.)
            items.append(self.rng.choice(self.acknowledged))
        else:
            items.append((None, self.wager(), "batch"))
        bad = self.rng.randrange(len(items) + 1)
        request = pb.ContributeBatchRequest(
            contributions=[
                pb.ContributeRequest(game_id=g, wager_amount=w, idempotency_key=k or "")
                for k, w, g in items
            ]
        )
        request.contributions.insert(bad, pb.ContributeRequest(game_id="batch", wager_amount=0))
        while True:
            try:
                reply = await self.stub.ContributeBatch(request, timeout=30)
            except grpc.aio.AioRpcError as exc:
                self.batch_codes[exc.code().name] += 1
                if exc.code().name in RETRYABLE:
                    await asyncio.sleep(0.05)
                    continue
                return
            break
        self.batch_codes["OK"] += 1
        if reply.rejected_count != 1 or reply.results[bad].error.field != "wager_amount":
            self.problems.append(f"batch: the bad item was not the one rejected: {reply}")
        for item, result in zip(request.contributions, reply.results, strict=True):
            if result.HasField("result"):
                self.batch_answers.append((item.idempotency_key or None, result.result))
                if item.idempotency_key:
                    self.acknowledged.append(
                        (item.idempotency_key, item.wager_amount, item.game_id)
                    )

    # --- wins ----------------------------------------------------------------------------

    async def win(self, request: pb.WinRequest) -> WinCall:
        try:
            response = await self.stub.Win(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            call = WinCall(request.idempotency_key, exc.code().name, None)
        else:
            call = WinCall(request.idempotency_key, "OK", response)
        self.wins.append(call)
        return call

    async def winner(self) -> None:
        sent: list[pb.WinRequest] = []
        while not self.done.is_set():
            await asyncio.sleep(self.rng.uniform(0.005, 0.03))
            roll = self.rng.random()
            if roll < 0.1 and sent:
                self.counts["win_resends"] += 1
                await self.win(self.rng.choice(sent))
                continue
            request = pb.WinRequest(
                group=self.rng.choice(GROUPS),
                game_id="stress",
                user_id="8a1f4b4e-9c1d-4c5e-8f00-5d3a2b1c0e9f",
                idempotency_key=self.fresh_key("w"),
            )
            if self.rng.random() < 0.5:
                pools = await self.stub.GetPools(pb.GetPoolsRequest(), timeout=30)
                current = next(p.current_amount for p in pools.pools if p.group == request.group)
                # Mostly within the pool; sometimes just above it (FAILED_PRECONDITION).
                request.win_amount = (
                    current + 1 if self.rng.random() < 0.1 else self.rng.randint(1, current)
                )
            if roll < 0.2:
                self.counts["win_concurrent_pairs"] += 1
                first, _ = await asyncio.gather(self.win(request), self.win(request))
            else:
                first = await self.win(request)
            if first.code == "OK":
                sent.append(request)

    # --- config --------------------------------------------------------------------------

    async def admin(self) -> None:
        while not self.done.is_set():
            await asyncio.sleep(self.rng.uniform(0.02, 0.08))
            group = self.rng.choice(GROUPS)
            request = pb.UpdateConfigRequest(group=group, actor="stress", reason="under load")
            metadata = ADMIN_METADATA
            roll = self.rng.random()
            if roll < 0.55:
                request.contribution_rate.CopyFrom(
                    decimal_pb2.Decimal(value=self.rng.choice(RATES))
                )
            elif roll < 0.8:
                request.seed_amount = self.rng.choice((5_000, 10_000, 50_000, 100_000))
                if self.rng.random() < 0.3:
                    request.clear_max_amount = True
                else:
                    request.max_amount = request.seed_amount * self.rng.choice((2, 10, 100))
            elif roll < 0.92:
                config = await self.stub.GetConfig(pb.GetConfigRequest(), timeout=30)
                version = next(c.version for c in config.pools if c.group == group)
                request.expected_version = version  # ABORTED if a batch got there first
                request.contribution_rate.CopyFrom(
                    decimal_pb2.Decimal(value=self.rng.choice(RATES))
                )
            else:
                # A stranger's token: the test server runs open (no clients), so this is
                # one more change; refusals are tests/e2e/test_identity*.py's.
                metadata = (("authorization", "Bearer not-the-token"),)
                request.contribution_rate.CopyFrom(
                    decimal_pb2.Decimal(value=self.rng.choice(RATES))
                )
            try:
                reply = await self.stub.UpdateConfig(request, metadata=metadata, timeout=30)
            except grpc.aio.AioRpcError as exc:
                self.configs.append((exc.code().name, None))
            else:
                self.configs.append(("OK", reply))


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Every call of this test shares one connection: IN_FLIGHT contributions, a winner and
    an admin, more than admission lets one connection run at once (RESOURCE_EXHAUSTED,
    tested in tests/e2e); this test is about the books under load, so that bound is lifted
    (with room: a call answered by an abort reaches the client before admission counts it
    out, so the server can briefly count more than the client has in flight)."""
    return dataclasses.replace(
        settings,
        grpc=dataclasses.replace(settings.grpc, max_in_flight_per_connection=4 * (IN_FLIGHT + 2)),
    )


async def test_stress_contributions_wins_and_config_changes(
    server: RunningServer, stub: jackpot_pb2_grpc.JackpotServiceStub, database_url: str
) -> None:
    seed = int(os.environ.get("JACKPOT_STRESS_SEED") or random.randrange(2**32))
    load = Load(random.Random(seed), stub, CONTRIBUTIONS)
    started = time.monotonic()

    async def contributions() -> None:
        await asyncio.gather(*(load.worker() for _ in range(IN_FLIGHT)))
        load.done.set()

    await asyncio.wait_for(
        asyncio.gather(contributions(), load.winner(), load.admin()), timeout=300
    )
    elapsed = time.monotonic() - started
    books = await server.service.audit()

    # 1. Every status is one the contract allows; none is UNKNOWN or INTERNAL.
    assert load.problems == [], load.problems[:5]
    codes = status_codes(c.code for c in load.calls)
    assert set(codes) <= {"OK", *RETRYABLE}, codes
    assert set(load.batch_codes) <= {"OK", *RETRYABLE}, dict(load.batch_codes)
    win_codes = status_codes(c.code for c in load.wins)
    assert set(win_codes) <= {"OK", "FAILED_PRECONDITION"}, win_codes
    config_codes = status_codes(code for code, _ in load.configs)
    # (RATES keep the three rates' sum at most 1, so no change is refused for it.)
    assert set(config_codes) <= {"OK", "ABORTED", "PERMISSION_DENIED"}, config_codes
    assert not FORBIDDEN_CODES & {*codes, *win_codes, *config_codes}

    # 2. The books balance: the service's audit, and an independent one.
    assert books.balanced, books.problems()
    assert check_books(database_url) == []

    # 3. Every acknowledged key is in the ledger once, with the answer its callers got.
    checked = check_contributions(database_url, load.calls, extra_answers=load.batch_answers)
    assert checked.problems == [], checked.problems[:20]

    # 4. Wins: each acknowledged key paid once, every answer for it the same.
    win_rows = win_ledger(database_url)
    by_key: dict[str, list[pb.WinResponse]] = defaultdict(list)
    for call in load.wins:
        if call.response is not None:
            by_key[call.key].append(call.response)
    for key, answers in by_key.items():
        assert len({(a.win_id, a.actual_win_amount, a.seed_top_up) for a in answers}) == 1, key
        assert sum(1 for a in answers if not a.replayed) == 1, key
        assert win_rows[key] == (answers[0].win_id, answers[0].actual_win_amount), key
    refused = {c.key for c in load.wins if c.code != "OK"} - set(by_key)
    assert not refused & set(win_rows), "a refused win was written"
    assert set(win_rows) == set(by_key)
    assert sum(a[0].actual_win_amount for a in by_key.values()) == sum(
        amount for _, amount in win_rows.values()
    )

    # 5. Config: one audit row per acknowledged change; no two changes share a version.
    counts = table_counts(database_url)
    accepted = [reply for code, reply in load.configs if reply is not None]
    assert counts["config_audit"] == len(accepted)
    versions = [(r.config.group, r.config.version) for r in accepted]
    assert len(set(versions)) == len(versions)

    report(
        "stress",
        {
            "seed": seed,
            "in_flight": IN_FLIGHT,
            "elapsed_s": round(elapsed, 2),
            "contribute_calls": len(load.calls),
            "contribute_codes": codes,
            "contribute_latency_ms": latency_ms([c.latency for c in load.calls]),
            "throughput_calls_per_s": round(len(load.calls) / elapsed),
            "batch_calls": dict(load.batch_codes),
            "server_batches": getattr(server.contributor, "batches", None),
            "server_batched_calls": getattr(server.contributor, "batched", None),
            **dict(load.counts),
            **checked.figures(),
            "win_calls": win_codes,
            "wins_in_ledger": len(win_rows),
            "config_calls": config_codes,
            "config_audit_rows": counts["config_audit"],
            "seed_funding_rows": counts["seed_fundings"],
            "audit": {a.group.value: a.discrepancy for a in books.pools},
        },
    )


def win_ledger(url: str) -> dict[str, tuple[int, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT idempotency_key, id, amount FROM wins").fetchall()
    assert all(key is not None for key, _, _ in rows)
    assert len({key for key, _, _ in rows}) == len(rows)
    return {key: (win_id, amount) for key, win_id, amount in rows}
