"""The server signs checkpoints of the ledger's tree while there are new leaves, appends
them to JACKPOT_CHECKPOINT_LOG and serves the newest on the health port; replicas on one
database sign one at a time. Checked with the outside verifier (hashlib and
cryptography, from docs/LEDGER.md)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import psycopg
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.entrypoints.server import start_server
from jackpot_grpc.ledger.checkpoint import split_log
from jackpot_grpc.service.ledger_books import CheckpointSigner, read_signer
from tests import outside_verifier as outside


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not true within {within} s"
        await asyncio.sleep(0.1)


def read(path: Path) -> str:
    return path.read_text()


async def test_the_server_signs_new_leaves_and_serves_the_newest_checkpoint(
    settings: Settings, database_url: str, ledger_key: Path, tmp_path: Path
) -> None:
    log = tmp_path / "checkpoints"
    signing = dataclasses.replace(
        settings,
        ledger=dataclasses.replace(
            settings.ledger, key_file=ledger_key, checkpoint_log=log, checkpoint_interval=0.2
        ),
    )
    key = outside.read_verifier_key(read(Path(f"{ledger_key}.pub")))
    running = await start_server(signing, database_url, port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
            await stub.Contribute(
                pb.ContributeRequest(game_id="slots", wager_amount=1000, idempotency_key="k-1")
            )

        def newest() -> tuple[int, bytes, dict[str, int]] | None:
            notes = list(split_log(log.read_text())) if log.exists() else []
            return outside.open_checkpoint(notes[-1], key) if notes else None

        async def covers_the_contribution() -> bool:
            latest = newest()
            return latest is not None and latest[0] == 4  # three seeds and the contribution

        await eventually(covers_the_contribution, within=10)
        signed_then = running.checkpointer.signed if running.checkpointer else None
        await asyncio.sleep(1.0)  # five more turns: nothing new, nothing signed
        notes = list(split_log(read(log)))
        assert running.checkpointer is not None
        assert running.checkpointer.signed == signed_then == len(notes)
        assert running.checkpointer.skipped >= 3 and running.checkpointer.failures == 0
        _, root, pools = outside.open_checkpoint(notes[-1], key)
        assert pools == {"minor": 10005, "major": 100003, "mega": 1000002}
        with psycopg.connect(database_url) as conn:
            rows = conn.execute("SELECT leaf_hash FROM ledger_leaves ORDER BY leaf_index")
            hashes = [bytes(h) for (h,) in rows]
        assert outside.tree_hash(hashes) == root

        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{running.health_port}/ledger/checkpoint") as answer,
        ):
            assert answer.status == 200
            assert await answer.text() == notes[-1]
    finally:
        await running.stop(grace=1.0)


def test_signers_on_one_database_take_turns(
    database_url: str, ledger_key: Path, tmp_path: Path
) -> None:
    """Two signers (as two replicas), each signing 15 times while rows arrive: no leaf is
    given twice or skipped, and every checkpoint extends the one before."""
    signers = [CheckpointSigner(read_signer(ledger_key), tmp_path / f"log-{n}") for n in range(2)]
    errors: list[BaseException] = []
    signed = [0, 0]

    def sign(n: int) -> None:
        try:
            for _ in range(15):
                if signers[n].sign(database_url, wait=False) is not None:
                    signed[n] += 1
        except BaseException as exc:
            errors.append(exc)

    def write() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for i in range(30):
                conn.execute(
                    "INSERT INTO seed_fundings (jackpot_group, amount, reason)"
                    " VALUES ('mega', %s, 'test')",
                    (i + 1,),
                )

    threads = [threading.Thread(target=sign, args=(n,)) for n in range(2)]
    threads.append(threading.Thread(target=write))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    signers[0].sign(database_url)
    with psycopg.connect(database_url) as conn:
        indexes = [i for (i,) in conn.execute("SELECT leaf_index FROM ledger_leaves ORDER BY 1")]
    assert indexes == list(range(33))
    assert signed[0] + signed[1] >= 2


async def test_a_contributes_receipt_proves_it_is_in_the_books(
    settings: Settings, database_url: str, ledger_key: Path, tmp_path: Path
) -> None:
    """Contribute answers its leaf index (the receipt); GetLedgerProof by that index (gRPC,
    and REST) proves the leaf against a signed checkpoint, checked with the outside
    verifier and docs/LEDGER.md's field table only. ContributeBatch items and Win answer
    their indexes over REST too, gap-free in commit order."""
    from jackpot_grpc.gateway.app import create_gateway_app, start_gateway
    from tests.outside_verifier import field_orders

    signing = dataclasses.replace(
        settings,
        ledger=dataclasses.replace(
            settings.ledger,
            key_file=ledger_key,
            checkpoint_log=tmp_path / "log",
            checkpoint_interval=0.2,
        ),
    )
    key = outside.read_verifier_key(read(Path(f"{ledger_key}.pub")))
    running = await start_server(signing, database_url, port=0)
    gateway = None
    try:
        gateway = await start_gateway(
            create_gateway_app(
                f"127.0.0.1:{running.port}",
                max_body_bytes=1 << 20,
                metrics_url=f"http://127.0.0.1:{running.health_port}/metrics",
                call_timeout=5.0,
            ),
            "127.0.0.1",
            0,
            shutdown_timeout=1.0,
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
            contribute = pb.ContributeRequest(
                game_id="roulette", wager_amount=2000, idempotency_key="r"
            )
            reply = await stub.Contribute(contribute)
            # The receipt: the leaf index, given in the writing transaction (three initial
            # seed fundings are leaves 0 to 2); a replay answers the same.
            assert reply.leaf_index == 3 and not reply.replayed
            replay = await stub.Contribute(contribute)
            assert (replay.replayed, replay.leaf_index) == (True, 3)
            request = pb.GetLedgerProofRequest(leaf_index=reply.leaf_index)

            async def proved() -> bool:
                try:
                    await stub.GetLedgerProof(request)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.OUT_OF_RANGE  # not yet covered
                    return False
                return True

            await eventually(proved, within=10)
            proof = await stub.GetLedgerProof(request)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetLedgerProof(pb.GetLedgerProofRequest(leaf_index=-1))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        size, root, _ = outside.open_checkpoint(proof.checkpoint, key)
        assert proof.tree_size == size and (proof.table, proof.row_id) == (
            "contributions",
            reply.contribution_id,
        )
        outside.verify_inclusion(
            proof.leaf_index, size, outside.leaf_hash(proof.leaf), list(proof.inclusion_proof), root
        )
        version, event, texts = outside.decode_leaf(proof.leaf)
        fields = dict(zip(field_orders()[event], texts, strict=True))
        assert (version, event) == (1, 1)
        assert fields["game_id"] == "roulette" and fields["wager_amount"] == "2000"
        assert fields["id"] == str(reply.contribution_id)
        assert fields["leaf_index"] == str(proof.leaf_index)

        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"http://127.0.0.1:{gateway.port}/api/jackpot/ledger/{proof.leaf_index}/proof"
            ) as answer:
                assert answer.status == 200, await answer.text()
                body = await answer.json()
            assert body["checkpoint"] == proof.checkpoint
            assert [base64.b64decode(p) for p in body["inclusionProof"]] == list(
                proof.inclusion_proof
            )
            assert base64.b64decode(body["leaf"]) == proof.leaf

            # REST answers the receipts too: each batch item its own index, in item order,
            # then a win (and its seed top-up right after it).
            base = f"http://127.0.0.1:{gateway.port}/api/jackpot"
            items = [{"gameId": "roulette", "wagerAmount": w} for w in (100, 200)]
            async with http.post(f"{base}/contribute:batch", json={"contributions": items}) as a:
                assert a.status == 200, await a.text()
                batch = await a.json()
            assert [int(r["result"]["leafIndex"]) for r in batch["results"]] == [4, 5]
            win = {"group": "JACKPOT_GROUP_MINOR", "gameId": "roulette",
                   "userId": "00000000-0000-4000-8000-000000000001"}  # fmt: skip
            async with http.post(f"{base}/win", json=win) as a:
                assert a.status == 200, await a.text()
                paid = await a.json()
            assert int(paid["leafIndex"]) == 6 and int(paid["seedTopUp"]) > 0
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT 'contributions', id, leaf_index FROM contributions"
                " UNION ALL SELECT 'wins', id, leaf_index FROM wins"
                " UNION ALL SELECT 'seed_fundings', id, leaf_index FROM seed_fundings"
                " WHERE win_id IS NOT NULL ORDER BY 3"
            ).fetchall()
        assert [(t, i) for t, _, i in rows] == [
            ("contributions", 3), ("contributions", 4), ("contributions", 5), ("wins", 6),
            ("seed_fundings", 7),
        ]  # fmt: skip
        assert rows[0][1] == reply.contribution_id and rows[3][1] == int(paid["winId"])
    finally:
        if gateway is not None:
            await gateway.stop()
        await running.stop(grace=1.0)


async def test_a_server_without_a_ledger_key_refuses_proofs(
    settings: Settings, database_url: str
) -> None:
    running = await start_server(settings, database_url, port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetLedgerProof(pb.GetLedgerProofRequest(leaf_index=0))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await running.stop(grace=1.0)


async def test_a_server_with_an_unreadable_ledger_key_does_not_start(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    bad = dataclasses.replace(
        settings,
        ledger=dataclasses.replace(
            settings.ledger, key_file=tmp_path / "missing.key", checkpoint_log=tmp_path / "log"
        ),
    )
    with pytest.raises(ConfigError, match="JACKPOT_LEDGER_KEY_FILE"):
        await start_server(bad, database_url, port=0)


async def test_proofs_stay_true_as_the_tree_grows(
    settings: Settings, database_url: str, ledger_key: Path, tmp_path: Path
) -> None:
    """The server keeps the leaf hashes it has read and reads only newer ones for the next
    proof: each contribution's proof, asked for after the tree grew, verifies against its
    own (larger) checkpoint with the outside verifier."""
    signing = dataclasses.replace(
        settings,
        ledger=dataclasses.replace(
            settings.ledger,
            key_file=ledger_key,
            checkpoint_log=tmp_path / "log",
            checkpoint_interval=0.2,
        ),
    )
    key = outside.read_verifier_key(read(Path(f"{ledger_key}.pub")))
    running = await start_server(signing, database_url, port=0)
    sizes: list[int] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
            for n in range(3):
                reply = await stub.Contribute(
                    pb.ContributeRequest(game_id="dice", wager_amount=1000, idempotency_key=f"g{n}")
                )
                request = pb.GetLedgerProofRequest(contribution_id=reply.contribution_id)

                async def proved(request: pb.GetLedgerProofRequest = request) -> bool:
                    try:
                        await stub.GetLedgerProof(request)
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.OUT_OF_RANGE  # not yet covered
                        return False
                    return True

                await eventually(proved, within=10)
                proof = await stub.GetLedgerProof(request)
                size, root, _ = outside.open_checkpoint(proof.checkpoint, key)
                outside.verify_inclusion(
                    proof.leaf_index,
                    size,
                    outside.leaf_hash(proof.leaf),
                    list(proof.inclusion_proof),
                    root,
                )
                assert proof.row_id == reply.contribution_id
                sizes.append(size)
    finally:
        await running.stop(grace=1.0)
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]  # the tree grew between proofs


async def test_proofs_across_blocks_of_the_kept_tree_verify(
    settings: Settings, database_url: str, ledger_key: Path, tmp_path: Path
) -> None:
    """Past a few blocks of leaves (the server keeps whole blocks' subtree hashes and reads
    one or two blocks per proof), every receipt of a ContributeBatch proves with the
    outside verifier: the first, one in a middle block, and the last, in the partial one."""
    signing = dataclasses.replace(
        settings,
        ledger=dataclasses.replace(
            settings.ledger,
            key_file=ledger_key,
            checkpoint_log=tmp_path / "log",
            checkpoint_interval=0.2,
        ),
    )
    key = outside.read_verifier_key(read(Path(f"{ledger_key}.pub")))
    running = await start_server(signing, database_url, port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
            batch = await stub.ContributeBatch(
                pb.ContributeBatchRequest(
                    contributions=[
                        pb.ContributeRequest(game_id="keno", wager_amount=100 + i)
                        for i in range(700)
                    ]
                )
            )
            receipts = [item.result.leaf_index for item in batch.results]
            assert receipts == list(range(3, 703))
            last = pb.GetLedgerProofRequest(leaf_index=receipts[-1])

            async def covered() -> bool:
                try:
                    await stub.GetLedgerProof(last)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.OUT_OF_RANGE
                    return False
                return True

            await eventually(covered, within=10)
            for position in (0, 300, 699):
                proof = await stub.GetLedgerProof(
                    pb.GetLedgerProofRequest(leaf_index=receipts[position])
                )
                size, root, _ = outside.open_checkpoint(proof.checkpoint, key)
                outside.verify_inclusion(
                    proof.leaf_index, size, outside.leaf_hash(proof.leaf),
                    list(proof.inclusion_proof), root,
                )  # fmt: skip
                assert proof.row_id == batch.results[position].result.contribution_id
    finally:
        await running.stop(grace=1.0)
