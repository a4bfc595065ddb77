"""docs/LEDGER.md's worked examples and field tables are what the code makes today."""

from __future__ import annotations

import re
from pathlib import Path

from testkit.ledger_doc import examples
from tests import outside_verifier as outside

DOC = Path(__file__).resolve().parents[2] / "docs" / "LEDGER.md"
BLOCK = re.compile(r"<!-- example: ([\w-]+) -->\n(.*?)\n<!-- end -->", re.DOTALL)


def _doc_blocks() -> dict[str, str]:
    found = {}
    for name, body in BLOCK.findall(DOC.read_text()):
        found[name] = body.removeprefix("```\n").removesuffix("\n```")
    return found


def test_every_example_in_the_doc_matches_the_code() -> None:
    in_doc, made = _doc_blocks(), examples()
    assert sorted(in_doc) == sorted(made)
    for name, block in made.items():
        assert in_doc[name] == block, f"docs/LEDGER.md example {name!r} is stale"


def test_the_docs_example_checkpoint_verifies_with_only_the_doc() -> None:
    blocks = _doc_blocks()
    key = outside.read_verifier_key(blocks["verifier-key"])
    size, root, pools = outside.open_checkpoint(blocks["checkpoint"] + "\n", key)
    assert (size, pools) == (3, {"minor": 10000, "major": 100003, "mega": 1000002})
    hashes = [bytes.fromhex(line.split()[-1]) for line in blocks["three-leaf-root"].splitlines()]
    assert outside.tree_hash(hashes[:3]) == root == hashes[-1]
    leaf = bytes.fromhex(blocks["contribution-leaf"].replace("\n", " ").replace(" ", ""))
    assert outside.leaf_hash(leaf).hex() == blocks["contribution-leaf-hash"] == hashes[1].hex()
    proof = [bytes.fromhex(x) for x in blocks["inclusion-proof"].split("\n--\n")[0].split()]
    outside.verify_inclusion(2, 3, hashes[2], proof, root)
    tampered = blocks["checkpoint"].replace("pool minor 10000", "pool minor 10001")
    try:
        outside.open_checkpoint(tampered + "\n", key)
    except Exception as exc:  # cryptography's InvalidSignature
        assert type(exc).__name__ == "InvalidSignature"
    else:
        raise AssertionError("an edited checkpoint verified")
