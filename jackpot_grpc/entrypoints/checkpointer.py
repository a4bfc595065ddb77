"""Signs a checkpoint of the ledger's tree every JACKPOT_CHECKPOINT_INTERVAL while there
are new leaves, and appends it to JACKPOT_CHECKPOINT_LOG (docs/LEDGER.md).

Off the hot path: the rows become leaves here, from a worker thread on its own
connection, never on the connections Contribute uses. With replicas on one database, one
signs at a time (an advisory lock; a replica that finds it held skips that turn). A
failure is logged and counted and the next turn tries again; the money paths never wait
for it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from jackpot_grpc.entrypoints.periodic import Periodic
from jackpot_grpc.ledger.checkpoint import CheckpointError, split_log
from jackpot_grpc.service.ledger_books import (
    CheckpointSigner,
    LedgerBooksError,
    LedgerProofs,
    read_signer,
)

log = logging.getLogger(__name__)


def last_note(path: Path) -> str | None:
    """The newest signed checkpoint in a log file, if any."""
    try:
        notes = list(split_log(path.read_text(encoding="utf-8")))
    except (OSError, CheckpointError):
        return None
    return notes[-1] if notes else None


class Checkpointer:
    def __init__(self, database_url: str, key_file: Path, log_file: Path, interval: float):
        self._url = database_url
        self._signer = CheckpointSigner(read_signer(key_file), log_file)
        self._log_file = log_file
        self._loop = Periodic("ledger-checkpoint", self.run_once, interval)
        self.signed = 0
        self.failures = 0
        self.skipped = 0  # turns another replica had, or with nothing new
        self._latest: str | None = last_note(log_file)

    @property
    def latest(self) -> str | None:
        """The newest checkpoint this process signed, else the newest in its log."""
        return self._signer.latest or self._latest

    def proofs(self) -> LedgerProofs:
        """GetLedgerProof's prover: against the newest checkpoint this process knows."""
        return LedgerProofs(self._url, lambda: self.latest, self._signer.signer.verifier)

    async def run_once(self) -> None:
        try:
            signed = await asyncio.to_thread(self._signer.sign, self._url, wait=False,
                                             only_if_new=True)  # fmt: skip
        except (LedgerBooksError, OSError) as exc:
            self.failures += 1
            log.error("ledger checkpoint not signed: %s", exc)
            return
        except Exception as exc:  # the database away, say: the next turn tries again
            self.failures += 1
            log.warning("ledger checkpoint failed: %s", exc)
            return
        if signed is None:
            self.skipped += 1
            return
        self.signed += 1
        log.info(
            "ledger checkpoint signed: %d leaves (%d new)",
            signed.checkpoint.size,
            signed.new_leaves,
        )

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
