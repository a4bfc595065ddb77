"""The worked examples of docs/LEDGER.md, made by the code from fixed inputs.

tests/unit/test_ledger_doc.py checks the doc still shows exactly these; after a deliberate
change to the encoding, `python -m testkit.ledger_doc` prints the blocks to paste.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from jackpot_grpc.ledger import merkle
from jackpot_grpc.ledger.checkpoint import Checkpoint
from jackpot_grpc.ledger.leaf import SCHEMAS, TABLES, EventType, Field, encode_leaf
from jackpot_grpc.ledger.note import Signer

# An example key only: its private half is printed in the doc.
EXAMPLE_SIGNER = Signer("jackpot.example/ledger", hashlib.sha256(b"docs/LEDGER.md").digest())

AT = datetime(2026, 12, 6, 12, 0, 0, 123456, tzinfo=UTC)

SEED_FUNDING: dict[str, object] = {
    "leaf_index": 0, "id": 1, "created_at": AT, "jackpot_group": "minor", "amount": 10000,
    "reason": "initial seed", "win_id": None,
}  # fmt: skip
CONTRIBUTION: dict[str, object] = {
    "leaf_index": 1, "id": 1, "created_at": AT, "client": "game-a",
    "idempotency_key": "spin-1", "fingerprint": bytes.fromhex("ab" * 4), "game_id": "slots",
    "wager_amount": 1000,
    "minor_rate": Decimal("0.005"), "minor_cap": None, "minor_amount": 5, "minor_after": 10005,
    "major_rate": Decimal("0.003"), "major_cap": None, "major_amount": 3, "major_after": 100003,
    "mega_rate": Decimal("0.002"), "mega_cap": None, "mega_amount": 2, "mega_after": 1000002,
}  # fmt: skip
# The same contribution a reserve and a cap later (migration 0014's extension fields): a
# minor cap of 10002 leaves 3 of the 5 over it, diverted to major; reserve rate 0.001.
CONTRIBUTION_EXTENDED: dict[str, object] = {
    **CONTRIBUTION, "leaf_index": 3, "id": 2,
    "minor_cap": 10002, "minor_amount": 2, "minor_after": 10002,
    "major_amount": 6, "major_after": 100006,
    "minor_reserve_rate": Decimal("0.001"), "minor_reserve": 1, "minor_overflow": 3,
    "minor_overflow_to": "major",
    "major_reserve_rate": Decimal(0), "major_reserve": 0, "major_overflow": 0,
    "major_overflow_to": "major",
    "mega_reserve_rate": Decimal(0), "mega_reserve": 0, "mega_overflow": 0,
    "mega_overflow_to": "mega",
}  # fmt: skip
WIN: dict[str, object] = {
    "leaf_index": 2, "id": 1, "created_at": AT, "client": "game-a", "idempotency_key": None,
    "fingerprint": None, "jackpot_group": "minor", "game_id": "slots",
    "user_id": uuid.UUID("00000000-0000-4000-8000-000000000001"), "requested_amount": None,
    "amount": 10005, "pool_before": 10005, "seed_top_up": 10000, "pool_after": 10000,
}  # fmt: skip

SUSPEND: dict[str, object] = {
    "leaf_index": 3, "id": 1, "changed_at": AT, "client": "ops-console", "actor": "pat",
    "reason": "maintenance", "jackpot_group": "minor", "action": "suspend",
    "pending_contribution_rate": None, "pending_seed_amount": None, "pending_max_amount": None,
    "pending_clear_max_amount": None,
}  # fmt: skip
SCHEDULE: dict[str, object] = {
    "leaf_index": 4, "id": 2, "changed_at": AT, "client": "ops-console", "actor": "pat",
    "reason": "", "jackpot_group": "major", "action": "schedule_config",
    "pending_contribution_rate": Decimal("0.004"), "pending_seed_amount": 150000,
    "pending_max_amount": None, "pending_clear_max_amount": 0,
}  # fmt: skip


def _hex_lines(data: bytes, width: int = 32) -> str:
    return "\n".join(data[i : i + width].hex(" ") for i in range(0, len(data), width))


def _absent(field: Field) -> str:
    return "extension" if field.extension else "yes" if field.nullable else "no"


def schema_table(event: EventType) -> str:
    rows = [f"| {i} | `{f.name}` | {f.kind.value} | {_absent(f)} |"
            for i, f in enumerate(SCHEMAS[event], 1)]  # fmt: skip
    head = [
        f"Event type {int(event)}: {event.name.lower().replace('_', ' ')} (`{TABLES[event]}`)",
        "",
        "| # | field | kind | may be absent |",
        "|---|---|---|---|",
    ]
    return "\n".join(head + rows)


def examples() -> dict[str, str]:
    """Each example block of the doc by its marker name."""
    events = [
        (EventType.SEED_FUNDING, SEED_FUNDING),
        (EventType.CONTRIBUTION, CONTRIBUTION),
        (EventType.WIN, WIN),
    ]
    leaves = [encode_leaf(event, values) for event, values in events]
    hashes = [merkle.leaf_hash(leaf) for leaf in leaves]
    left = merkle.node_hash(hashes[0], hashes[1])
    top = merkle.root(hashes)
    checkpoint = Checkpoint(
        EXAMPLE_SIGNER.name, 3, top, (("minor", 10000), ("major", 100003), ("mega", 1000002))
    )
    out = {f"schema-{event.name.lower()}": schema_table(event) for event in EventType}
    out["contribution-leaf"] = _hex_lines(leaves[1])
    out["contribution-leaf-hash"] = hashes[1].hex()
    extended = encode_leaf(EventType.CONTRIBUTION, CONTRIBUTION_EXTENDED)
    extension = {f.name for f in SCHEMAS[EventType.CONTRIBUTION] if f.extension}
    first = {k: v for k, v in CONTRIBUTION_EXTENDED.items() if k not in extension}
    out["contribution-extension"] = _hex_lines(
        extended[len(encode_leaf(EventType.CONTRIBUTION, first)) :]
    )
    out["suspend-leaf"] = _hex_lines(encode_leaf(EventType.POOL_LIFECYCLE, SUSPEND))
    out["schedule-leaf"] = _hex_lines(encode_leaf(EventType.POOL_LIFECYCLE, SCHEDULE))
    out["three-leaf-root"] = "\n".join(
        [
            f"leaf hash 0 (seed funding)  {hashes[0].hex()}",
            f"leaf hash 1 (contribution)  {hashes[1].hex()}",
            f"leaf hash 2 (win)           {hashes[2].hex()}",
            f"node(0, 1)                  {left.hex()}",
            f"root = node(node(0, 1), 2)  {top.hex()}",
        ]
    )
    out["inclusion-proof"] = (
        "\n".join(p.hex() for p in merkle.inclusion_proof(2, hashes))
        + "\n--\n"
        + "\n".join(p.hex() for p in merkle.inclusion_proof(0, hashes))
    )
    out["verifier-key"] = EXAMPLE_SIGNER.verifier.text()
    out["signer-key"] = EXAMPLE_SIGNER.text()
    out["checkpoint"] = checkpoint.sign(EXAMPLE_SIGNER).rstrip("\n")
    out["consistency-proof"] = "\n".join(p.hex() for p in merkle.consistency_proof(2, hashes))
    return out


if __name__ == "__main__":
    for name, block in examples().items():
        print(f"<!-- example: {name} -->\n```\n{block}\n```\n")
