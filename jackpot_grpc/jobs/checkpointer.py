"""Signs a checkpoint of the ledger's tree every JACKPOT_CHECKPOINT_INTERVAL while there
are new leaves, and appends it to JACKPOT_CHECKPOINT_LOG (docs/LEDGER.md).

Off the hot path: the rows become leaves here, in a worker process of its own (spawned,
one) on its own connection, never on the connections Contribute uses: encoding and hashing
leaves is CPU work that, in a thread, would hold this process's GIL against the calls.
With replicas on one database, one signs at a time (an advisory lock; a replica that finds
it held skips that turn). A failure is logged and counted and the next turn tries again;
the money paths never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from jackpot_grpc.adapters.database import DbPool
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.jobs.periodic import Periodic
from jackpot_grpc.ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    split_log,
)
from jackpot_grpc.service.ledger_books import (
    CheckpointSigner,
    HistoryChanged,
    LedgerBooksError,
    LedgerProofs,
    Signed,
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


# The worker process's signer: it keeps the tree's frontier and its connection between turns.
_worker_signer: CheckpointSigner | None = None


def _start_worker(key_file: Path, log_file: Path) -> None:
    global _worker_signer
    # Its connection too: it ends with the worker process.
    _worker_signer = CheckpointSigner(read_signer(key_file), log_file, keep_connection=True)


def _sign_in_worker(url: str) -> Signed | None:
    assert _worker_signer is not None
    return _worker_signer.sign(url, wait=False, only_if_new=True)


class Checkpointer:
    def __init__(self, database_url: str, key_file: Path, log_file: Path, interval: float):
        self._url = database_url
        try:
            self._verifier = read_signer(key_file).verifier
        except LedgerBooksError as exc:  # a bad setting: the start fails with its message
            raise ConfigError(f"JACKPOT_LEDGER_KEY_FILE: {exc}") from exc
        self._key_file = key_file
        self._log_file = log_file
        self._worker: ProcessPoolExecutor | None = None
        self._worker_pid: int | None = None
        self._signed_note: str | None = None
        self._loop = Periodic("ledger-checkpoint", self.run_once, interval)
        self.signed = 0
        self.failures = 0
        self.skipped = 0  # turns another replica had, or with nothing new
        self._latest: str | None = last_note(log_file)
        # Why signing stopped (failover_watch: the database lost checkpointed leaves).
        self.halted: str | None = None

    @property
    def latest(self) -> str | None:
        """The newest checkpoint this process signed, else the newest in its log."""
        return self._signed_note or self._latest

    def newest(self) -> Checkpoint | None:
        """The newest checkpoint, opened (None: none yet, or it does not verify)."""
        note = self.latest
        if note is None:
            return None
        try:
            return open_checkpoint(note, self._verifier)
        except CheckpointError:
            return None

    def halt(self, reason: str) -> None:
        """Sign no more: the database no longer holds what an earlier checkpoint covers,
        and a new checkpoint must not bless that history (an operator restarts signing
        after the runbook's checks, by restarting the server)."""
        if self.halted is None:
            log.error("ledger checkpoint signing halted: %s", reason)
        self.halted = reason

    def proofs(self, pool: DbPool) -> LedgerProofs:
        """GetLedgerProof's prover: against the newest checkpoint this process knows, reading
        over `pool` (the side pool: never the connections the calls need)."""
        return LedgerProofs(pool, lambda: self.latest, self._verifier)

    async def run_once(self) -> None:
        if self.halted is not None:
            self.skipped += 1
            return
        try:
            if self._worker_pid is None:
                await self._record_worker()
            assert self._worker is not None
            loop = asyncio.get_running_loop()
            signed = await loop.run_in_executor(self._worker, _sign_in_worker, self._url)
        except HistoryChanged as exc:  # before the failover watch may have seen it
            # Not halted: the next turn signs only over a database that still holds the
            # log's last checkpoint (a switchover that lost nothing); the failover watch
            # halts signing when checkpointed leaves are missing.
            self.failures += 1
            log.error("ledger checkpoint not signed: %s", exc)
            return
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
        self._signed_note = signed.note
        log.info(
            "ledger checkpoint signed: %d leaves (%d new)",
            signed.checkpoint.size,
            signed.new_leaves,
        )

    def start(self) -> None:
        self._worker = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),  # no fork of gRPC's threads
            initializer=_start_worker,
            initargs=(self._key_file, self._log_file),
        )
        self._loop.start()

    async def _record_worker(self) -> None:
        """The worker's process id (it is spawned on first use), to end it if it hangs."""
        assert self._worker is not None
        self._worker_pid = await asyncio.get_running_loop().run_in_executor(self._worker, os.getpid)

    async def stop(self, budget: float = 2.0) -> None:
        """Bounded: a worker still busy after `budget` seconds (its leaves' COMMIT held by
        a synchronous standby that is gone, say) is terminated; its transaction is the
        database's to finish or roll back, and no checkpoint was signed over it."""
        await self._loop.stop(budget)
        if self._worker is not None:
            worker, self._worker = self._worker, None
            stopping = asyncio.ensure_future(
                asyncio.to_thread(worker.shutdown, wait=True, cancel_futures=True)
            )
            done, _ = await asyncio.wait({stopping}, timeout=budget)
            if not done and self._worker_pid is not None:
                log.error("ledger checkpoint worker still busy after %.1f s: terminating", budget)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._worker_pid, signal.SIGTERM)
                await asyncio.wait({stopping}, timeout=budget)
