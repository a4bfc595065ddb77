"""Every PostgreSQL advisory lock key the service takes, in one place so none collide.

Keys are "jackpot" in ASCII (0x6A61636B706F74) with a distinct low byte per job.
"""

from __future__ import annotations

from typing import Final

COMPACT_METRICS: Final = 0x6A61636B706F74  # metrics history compaction
MIGRATION: Final = 0x6A61636B706F7401  # `jackpot migrate`: one migrator at a time
PRUNE_METRICS: Final = 0x6A61636B706F7402  # metrics history pruning
LEDGER_AUDIT: Final = 0x6A61636B706F7403  # the periodic audit: one replica per interval
LEDGER_CHECKPOINT: Final = 0x6A61636B706F7404  # leaves and checkpoints: one signer at a time
