"""Many clients at once: whatever order the server serialises them in, the totals that do
not depend on order must hold. Every acknowledged key is in the ledger exactly once, the
shares the clients were told sum to the ledger's, and each pool moved by exactly its
contributions less its wins plus its seed top-ups. The audit passes afterwards."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field

import grpc
import psycopg
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer
from jackpot_grpc.service.reports import run_audit

CLIENTS = 8
OPS_PER_CLIENT = 50
GROUPS = (pb.JACKPOT_GROUP_MINOR, pb.JACKPOT_GROUP_MAJOR, pb.JACKPOT_GROUP_MEGA)
NAMES = {
    pb.JACKPOT_GROUP_MINOR: "minor",
    pb.JACKPOT_GROUP_MAJOR: "major",
    pb.JACKPOT_GROUP_MEGA: "mega",
}


@dataclass
class Acknowledged:
    """What the service told the clients it did, by idempotency key."""

    contributions: dict[str, tuple[int, dict[str, int]]] = field(default_factory=dict)
    wins: dict[str, tuple[int, str, int, int]] = field(
        default_factory=dict
    )  # id, pool, paid, top-up


def shares_of(reply: pb.ContributeResponse) -> dict[str, int]:
    return {NAMES[a.group]: a.amount for a in reply.contributions}


async def client(port: int, seed: int, seen: Acknowledged) -> None:
    rng = random.Random(seed)
    mine: list[pb.ContributeRequest] = []
    my_wins: list[pb.WinRequest] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
        for n in range(OPS_PER_CLIENT):
            op = rng.choice(("contribute", "batch", "replay", "win", "win_replay"))
            if op == "replay" and mine:
                request = rng.choice(mine)
                reply = await stub.Contribute(request, timeout=30)
                assert reply.replayed
                assert seen.contributions[request.idempotency_key][0] == reply.contribution_id
            elif op == "win" or (op == "win_replay" and not my_wins):
                win = pb.WinRequest(
                    group=rng.choice(GROUPS),
                    game_id="concurrent",
                    user_id=str(uuid.uuid4()),
                    win_amount=rng.randint(1, 3_000),  # below every seed: never refused
                    idempotency_key=f"w-{seed}-{n}",
                )
                paid = await stub.Win(win, timeout=30)
                assert not paid.replayed
                seen.wins[win.idempotency_key] = (
                    paid.win_id,
                    NAMES[win.group],
                    paid.actual_win_amount,
                    paid.seed_top_up,
                )
                my_wins.append(win)
            elif op == "win_replay":
                win = rng.choice(my_wins)
                paid = await stub.Win(win, timeout=30)
                assert paid.replayed and paid.win_id == seen.wins[win.idempotency_key][0]
            else:
                size = 1 if op in ("contribute", "replay") else rng.randint(2, 6)
                items = [
                    pb.ContributeRequest(
                        game_id="concurrent",
                        wager_amount=rng.randint(1, 200_000),
                        idempotency_key=f"c-{seed}-{n}-{i}",
                    )
                    for i in range(size)
                ]
                if size == 1:
                    results = [await stub.Contribute(items[0], timeout=30)]
                else:
                    batch = await stub.ContributeBatch(
                        pb.ContributeBatchRequest(contributions=items), timeout=30
                    )
                    assert batch.applied_count == size
                    results = [r.result for r in batch.results]
                for request, reply in zip(items, results, strict=True):
                    assert not reply.replayed
                    seen.contributions[request.idempotency_key] = (
                        reply.contribution_id,
                        shares_of(reply),
                    )
                    mine.append(request)


async def test_concurrent_clients_keep_the_totals(
    server: RunningServer, settings: Settings, database_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT jackpot_group, current_amount FROM jackpots")
        before: dict[str, int] = dict(await cur.fetchall())

    seen = Acknowledged()
    await asyncio.gather(*(client(server.port, seed, seen) for seed in range(CLIENTS)))

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT idempotency_key, id, minor_amount, major_amount, mega_amount FROM contributions"
        )
        ledger = {
            key: (row_id, {"minor": a, "major": b, "mega": c})
            for key, row_id, a, b, c in await cur.fetchall()
        }
        cur = await conn.execute(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM contributions"
        )
        assert await cur.fetchone() == (len(seen.contributions), len(seen.contributions))
        cur = await conn.execute(
            "SELECT idempotency_key, id, jackpot_group, amount, seed_top_up FROM wins"
        )
        wins = {
            key: (row_id, g, paid, top_up) for key, row_id, g, paid, top_up in await cur.fetchall()
        }
        cur = await conn.execute("SELECT jackpot_group, current_amount FROM jackpots")
        after: dict[str, int] = dict(await cur.fetchall())

    # Every acknowledged key exactly once, as the client was told; nothing else written.
    assert ledger == seen.contributions
    assert wins == seen.wins
    for name in ("minor", "major", "mega"):
        contributed = sum(shares[name] for _, shares in seen.contributions.values())
        paid = sum(p for _, g, p, _ in seen.wins.values() if g == name)
        topped_up = sum(t for _, g, _, t in seen.wins.values() if g == name)
        assert after[name] - before[name] == contributed - paid + topped_up, name

    books = await run_audit(settings, database_url)
    assert books.balanced, books.problems()
