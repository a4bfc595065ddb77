"""`jackpot ledger export` and `jackpot ledger prove`, checked the way an outsider would:
with hashlib and cryptography only (tests/outside_verifier.py) and the field tables of
docs/LEDGER.md, no import of the project's hashing code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from testkit.ledger_tamper import Sealed, insider, run
from tests import outside_verifier as outside

pytestmark = pytest.mark.usefixtures("keep_logging")


def test_an_export_verifies_against_the_checkpoints_with_only_the_doc(
    sealed: Sealed,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "export"
    assert run(monkeypatch, sealed, "ledger", "export", "--out", str(out)) == 0
    orders, starts = outside.field_orders(), outside.extension_starts()
    assert sorted(orders) == [1, 2, 3, 4, 5]
    key = outside.read_verifier_key((out / "verifier.key").read_text())
    assert key[0] == "jackpot-ledger"
    lines = [json.loads(line) for line in (out / "leaves.jsonl").read_text().splitlines()]
    hashes = []
    for position, line in enumerate(lines):
        assert line["index"] == position
        texts = [line["fields"][name] for name in orders[line["event_type"]]]
        leaf = outside.encode_leaf(1, line["event_type"], texts, starts[line["event_type"]])
        assert leaf.hex() == line["leaf"], line
        hashes.append(outside.leaf_hash(leaf))
    checked = 0
    text = (out / "checkpoints.log").read_text()
    # Each note: its text, a blank line, its signature line; a blank line between notes.
    for note in re.findall(r".*?\n\n— [^\n]+\n", text, flags=re.DOTALL):
        size, root, pools = outside.open_checkpoint(note.lstrip("\n"), key)
        assert outside.tree_hash(hashes[:size]) == root
        checked += 1
    assert checked == 2
    assert set(pools) == {"minor", "major", "mega"}

    # A row changed after the export: the export no longer matches the checkpoint.
    insider(sealed.url, "UPDATE contributions SET game_id = 'x' WHERE id = 1")
    again = tmp_path / "again"
    assert run(monkeypatch, sealed, "ledger", "export", "--out", str(again)) == 0
    changed = [json.loads(line) for line in (again / "leaves.jsonl").read_text().splitlines()]
    rebuilt = [outside.leaf_hash(bytes.fromhex(line["leaf"])) for line in changed]
    assert outside.tree_hash(rebuilt[:size]) != root


def test_a_leafs_proof_verifies_with_only_the_doc(
    sealed: Sealed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = outside.read_verifier_key(sealed.public_key.read_text())
    for index in (0, 5, 17):
        capsys.readouterr()
        assert run(monkeypatch, sealed, "ledger", "prove", str(index)) == 0
        proof = json.loads(capsys.readouterr().out)
        size, root, _ = outside.open_checkpoint(proof["checkpoint"], key)
        assert proof["tree_size"] == size and proof["index"] == index
        leaf = bytes.fromhex(proof["leaf"])
        path = [bytes.fromhex(p) for p in proof["inclusion_proof"]]
        outside.verify_inclusion(index, size, outside.leaf_hash(leaf), path, root)
    # A proof for a row that was changed does not verify.
    insider(sealed.url, f"UPDATE {proof['table']} SET created_at = now() WHERE id = {proof['id']}")
    capsys.readouterr()
    assert run(monkeypatch, sealed, "ledger", "prove", "17") == 0
    changed = json.loads(capsys.readouterr().out)
    with pytest.raises(outside.Invalid):
        outside.verify_inclusion(
            17,
            size,
            outside.leaf_hash(bytes.fromhex(changed["leaf"])),
            [bytes.fromhex(p) for p in changed["inclusion_proof"]],
            root,
        )
