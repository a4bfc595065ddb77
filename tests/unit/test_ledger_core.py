"""The ledger's pure core against known vectors: RFC 6962/9162 test vectors (the Merkle tree
of Certificate Transparency, shared by its implementations), Go's sumdb/note vector (the
signed-note format), and round trips of the leaf encoding and checkpoints."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jackpot_grpc.ledger import merkle
from jackpot_grpc.ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    log_entry,
    open_checkpoint,
    parse_checkpoint,
    split_log,
)
from jackpot_grpc.ledger.leaf import (
    EventType,
    LeafEncodingError,
    canonical_fields,
    decode_leaf,
    encode_leaf,
)
from jackpot_grpc.ledger.note import NoteError, Signer, Verifier, open_note, sign_note

h = bytes.fromhex
# The RFC 6962 test tree: eight leaves and the root of each prefix.
LEAVES = [h(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                         "606162636465666768696a6b6c6d6e6f")]  # fmt: skip
ROOTS = [h(x) for x in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]  # fmt: skip
HASHES = [merkle.leaf_hash(leaf) for leaf in LEAVES]

# golang.org/x/mod/sumdb/note's own test key and note.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZS"
    "NXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_roots_match_the_rfc_vectors() -> None:
    for size in range(1, 9):
        assert merkle.root(HASHES[:size]) == ROOTS[size - 1], size
    assert merkle.root([]) == hashlib.sha256(b"").digest()


def test_inclusion_proof_matches_the_rfc_vector() -> None:
    proof = merkle.inclusion_proof(5, HASHES)
    assert [p.hex() for p in proof] == [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]
    merkle.verify_inclusion(5, 8, HASHES[5], proof, ROOTS[7])
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(4, 8, HASHES[5], proof, ROOTS[7])
    assert merkle.inclusion_proof(2, HASHES[:3]) == [ROOTS[1]]


def test_consistency_proofs_match_the_rfc_vectors() -> None:
    proof = merkle.consistency_proof(6, HASHES)
    assert [p.hex() for p in proof] == [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]
    merkle.verify_consistency(6, 8, ROOTS[5], ROOTS[7], proof)
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(6, 8, ROOTS[4], ROOTS[7], proof)
    assert [p.hex() for p in merkle.consistency_proof(2, HASHES[:5])] == [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ]


@given(st.integers(min_value=1, max_value=40), st.data())
def test_every_proof_of_every_tree_verifies(size: int, data: st.DataObject) -> None:
    hashes = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    top = merkle.root(hashes)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    proof = merkle.inclusion_proof(index, hashes)
    merkle.verify_inclusion(index, size, hashes[index], proof, top)
    other = merkle.leaf_hash(b"not in the tree")
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(index, size, other, proof, top)
    old = data.draw(st.integers(min_value=1, max_value=size))
    consistency = merkle.consistency_proof(old, hashes)
    old_root = merkle.root(hashes[:old])
    merkle.verify_consistency(old, size, old_root, top, consistency)
    if old < size:
        changed = [*hashes[: old - 1], other, *hashes[old:]]
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(old, size, merkle.root(changed[:old]), top, consistency)


def test_go_note_vector_verifies_and_our_keys_read_and_write_gos_format() -> None:
    verifier = Verifier.from_text(GO_VKEY)
    assert open_note(GO_NOTE, verifier) == GO_TEXT
    signer = Signer.from_text(GO_SKEY)
    assert signer.text() == GO_SKEY
    assert signer.verifier.text() == GO_VKEY
    # Ed25519 is deterministic: signing Go's text gives Go's signature.
    assert sign_note(GO_TEXT, signer) == GO_NOTE
    with pytest.raises(NoteError):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), verifier)
    with pytest.raises(NoteError):
        Verifier.from_text(GO_VKEY.replace("c74f20a3", "c74f20a4"))


def test_a_note_by_another_key_is_refused() -> None:
    mine, theirs = Signer.generate("jackpot-ledger"), Signer.generate("jackpot-ledger")
    note = sign_note("hello\n", theirs)
    with pytest.raises(NoteError, match="no signature"):
        open_note(note, mine.verifier)
    assert open_note(note, theirs.verifier) == "hello\n"


def test_checkpoint_round_trip_and_refusals() -> None:
    signer = Signer.generate("jackpot-ledger")
    checkpoint = Checkpoint("jackpot-ledger", 8, ROOTS[7], (("minor", 10000), ("mega", 5)))
    note = checkpoint.sign(signer)
    assert open_checkpoint(note, signer.verifier) == checkpoint
    assert note.startswith(
        "jackpot-ledger\n8\n" + base64.b64encode(ROOTS[7]).decode() + "\npool minor 10000\n"
    )
    for edit in (("\n8\n", "\n9\n"), ("pool mega 5", "pool mega 6")):
        with pytest.raises(CheckpointError):
            open_checkpoint(note.replace(*edit), signer.verifier)
    for bad in ("o\n08\n" + base64.b64encode(ROOTS[0]).decode() + "\n", "o\n1\nAAAA\n", "o\n1\n"):
        with pytest.raises(CheckpointError):
            parse_checkpoint(bad)
    second = Checkpoint("jackpot-ledger", 9, ROOTS[6], ()).sign(signer)
    assert list(split_log(log_entry(note) + log_entry(second))) == [note, second]


CONTRIBUTION = {
    "leaf_index": 7,
    "id": 3,
    "created_at": datetime(2026, 12, 6, 13, 0, 0, 250, tzinfo=timezone(timedelta(hours=1))),
    "client": "game-a",
    "idempotency_key": "k-1",
    "fingerprint": b"\x01\xff",
    "game_id": "slots",
    "wager_amount": 1000,
    **{
        f"{g}_{f}": v
        for g in ("minor", "major", "mega")
        for f, v in (("rate", Decimal("0.005")), ("cap", None), ("amount", 5), ("after", 10005))
    },
}


def test_leaf_encoding_is_canonical_and_decodes_back() -> None:
    leaf = encode_leaf(EventType.CONTRIBUTION, CONTRIBUTION)
    assert leaf[:2] == b"\x01\x01"
    assert leaf[2:7] == b"\x00\x00\x00\x017"  # leaf_index: length 1, "7"
    event, texts = decode_leaf(leaf)
    assert event is EventType.CONTRIBUTION
    assert texts["created_at"] == "2026-12-06T12:00:00.000250Z"
    assert texts["minor_rate"] == "0.0050000000"
    assert texts["minor_cap"] is None
    assert texts["fingerprint"] == "01ff"
    assert texts == canonical_fields(EventType.CONTRIBUTION, CONTRIBUTION)
    # The same value in another form gives the same bytes; another value other bytes.
    same = {**CONTRIBUTION, "minor_rate": "0.0050000000",
            "created_at": datetime(2026, 12, 6, 12, 0, 0, 250, tzinfo=UTC)}  # fmt: skip
    assert encode_leaf(EventType.CONTRIBUTION, same) == leaf
    assert encode_leaf(EventType.CONTRIBUTION, {**CONTRIBUTION, "client": "game-b"}) != leaf
    # Absent and empty differ.
    keyless = {**CONTRIBUTION, "idempotency_key": ""}
    assert encode_leaf(EventType.CONTRIBUTION, keyless) != encode_leaf(
        EventType.CONTRIBUTION, {**CONTRIBUTION, "idempotency_key": None}
    )


def test_leaf_encoding_refuses_what_has_no_canonical_text() -> None:
    win = {
        "leaf_index": 1, "id": 1, "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "client": "c", "idempotency_key": None, "fingerprint": None, "jackpot_group": "minor",
        "game_id": "g", "user_id": uuid.UUID(int=5), "requested_amount": None, "amount": 9,
        "pool_before": 9, "seed_top_up": 9, "pool_after": 9,
    }  # fmt: skip
    assert decode_leaf(encode_leaf(EventType.WIN, win))[1]["user_id"] == str(uuid.UUID(int=5))
    for bad in ({"amount": None}, {"amount": 1.5}, {"created_at": datetime(2026, 1, 1)}):
        with pytest.raises(LeafEncodingError):
            encode_leaf(EventType.WIN, {**win, **bad})
    with pytest.raises(LeafEncodingError):
        encode_leaf(EventType.CONTRIBUTION, {**CONTRIBUTION, "minor_rate": Decimal("0.1e-11")})
    leaf = encode_leaf(EventType.WIN, win)
    for broken in (leaf + b"\x00", leaf[:-1], b"\x02" + leaf[1:], leaf[:1] + b"\x09" + leaf[2:]):
        with pytest.raises(LeafEncodingError):
            decode_leaf(broken)


def test_an_extension_is_encoded_whole_when_present_and_not_at_all_when_absent() -> None:
    seed = {
        "leaf_index": 0, "id": 1, "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "jackpot_group": "minor", "amount": 10, "reason": "initial seed", "win_id": None,
    }  # fmt: skip
    before = encode_leaf(EventType.SEED_FUNDING, seed)  # a row older than the extension
    assert encode_leaf(EventType.SEED_FUNDING, {**seed, "source": None}) == before
    assert decode_leaf(before)[1]["source"] is None
    funded = encode_leaf(EventType.SEED_FUNDING, {**seed, "source": "reserve"})
    assert funded == before + b"\x00\x00\x00\x07reserve"
    assert decode_leaf(funded)[1]["source"] == "reserve"
    with pytest.raises(LeafEncodingError, match="not canonical"):  # an all-absent extension
        decode_leaf(before + b"\xff\xff\xff\xff")
    # A contribution's extension: every field once any is present, absent ones as ff ff ff ff.
    meters = {"minor_reserve": 0, "minor_overflow": 0, "minor_overflow_to": "minor"}
    extended = encode_leaf(EventType.CONTRIBUTION, {**CONTRIBUTION, **meters})
    texts = decode_leaf(extended)[1]
    assert (texts["minor_overflow_to"], texts["mega_reserve_rate"]) == ("minor", None)
    base = encode_leaf(EventType.CONTRIBUTION, CONTRIBUTION)
    assert extended.startswith(base) and extended.count(b"\xff\xff\xff\xff") > 9


def test_the_frontier_gives_every_prefix_root() -> None:
    frontier = merkle.Frontier()
    assert frontier.root() == merkle.EMPTY_ROOT
    for size, leaf in enumerate(HASHES, 1):
        frontier.append(leaf)
        assert (frontier.size, frontier.root()) == (size, ROOTS[size - 1])


def test_a_frontier_goes_on_from_its_nodes_and_refuses_what_is_none() -> None:
    frontier = merkle.Frontier()
    for leaf in HASHES[:6]:
        frontier.append(leaf)
    resumed = merkle.Frontier.from_nodes(frontier.nodes())
    assert [count for count, _ in frontier.nodes()] == [4, 2]
    for leaf in HASHES[6:]:
        resumed.append(leaf)
    assert (resumed.size, resumed.root()) == (8, ROOTS[7])
    for bad in ([(3, ROOTS[0])], [(2, ROOTS[0]), (4, ROOTS[1])], [(2, ROOTS[0])] * 2):
        with pytest.raises(merkle.ProofError):
            merkle.Frontier.from_nodes(bad)


def test_a_frontier_extended_by_many_hashes_at_once_has_every_rfc_root() -> None:
    """extend() builds a level at a time what append() builds a leaf at a time: from every
    prefix of the RFC tree, any run of further leaves gives the RFC's root and the nodes
    append() would keep."""
    for start in range(len(HASHES) + 1):
        for end in range(start, len(HASHES) + 1):
            frontier = merkle.Frontier()
            frontier.extend(b"".join(HASHES[:start]))
            frontier.extend(b"".join(HASHES[start:end]))
            one_by_one = merkle.Frontier()
            for leaf in HASHES[:end]:
                one_by_one.append(leaf)
            expected = ROOTS[end - 1] if end else merkle.EMPTY_ROOT
            assert (frontier.size, frontier.root()) == (end, expected), (start, end)
            assert frontier.nodes() == one_by_one.nodes(), (start, end)
    with pytest.raises(merkle.ProofError):
        merkle.Frontier().extend(HASHES[0][:-1])


@given(st.lists(st.integers(min_value=0, max_value=300), max_size=6))
def test_a_frontier_extended_in_runs_matches_the_tree_root(runs: list[int]) -> None:
    hashes = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(sum(runs))]
    frontier, at = merkle.Frontier(), 0
    for run in runs:
        frontier.extend(b"".join(hashes[at : at + run]))
        at += run
        assert (frontier.size, frontier.root()) == (at, merkle.root(hashes[:at]))


@given(
    size=st.integers(min_value=1, max_value=5 * merkle.BLOCK + 3),
    data=st.data(),
)
def test_the_proof_tree_gives_the_rfcs_path_from_two_blocks_of_leaves(
    size: int, data: st.DataObject
) -> None:
    """A ProofTree that kept the whole blocks gives PATH(m, D[n]) from at most two blocks of
    leaf hashes (the leaf's and the last, partial one), for trees it grew past too."""
    hashes = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(size + 700)]
    tree = merkle.ProofTree()
    kept = data.draw(st.sampled_from([size, size + 700]))  # the tree grew since, or not
    tree.add_blocks(hashes[: kept - kept % merkle.BLOCK])
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    ranges = tree.blocks_for(index, size)
    assert len(ranges) <= 2 and all(end - start <= merkle.BLOCK for start, end in ranges)
    leaves = {start: hashes[start:end] for start, end in ranges}
    path = tree.inclusion_proof(index, size, leaves)
    assert path == merkle.inclusion_proof(index, hashes[:size])
    merkle.verify_inclusion(index, size, hashes[index], path, merkle.root(hashes[:size]))


def test_the_proof_tree_takes_whole_blocks_only_and_needs_them_all() -> None:
    tree = merkle.ProofTree()
    with pytest.raises(merkle.ProofError, match="whole blocks"):
        tree.add_blocks([b"\x00" * 32] * (merkle.BLOCK - 1))
    with pytest.raises(merkle.ProofError, match="add the blocks"):
        tree.inclusion_proof(0, merkle.BLOCK + 1, {})
