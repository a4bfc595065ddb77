"""What a pool watcher is told: hits (wins, as paid) beside the pools' states."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from jackpot_grpc.domain.model import Group


@dataclass(frozen=True)
class Hit:
    """A committed win: its pool, amount and time; its ledger row and sequence (None for a
    row written before the ledger was sequenced)."""

    group: Group
    amount: int
    won_at: datetime
    win_id: int
    ledger_seq: int | None
