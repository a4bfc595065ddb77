"""Which database history the server writes to, and what a failover lost.

The health probe's connection reads the cluster's system identifier and timeline each time
it connects (repository.cluster_identity). The first is recorded; a different one after a
reconnect means the database failed over (a standby was promoted: a new timeline) or was
replaced (a restore, another cluster: a new system identifier). That is logged at ERROR,
counted (`jackpot_database_timeline_changes_total`, alerted) and shown in /health.

A failover to a standby that had not received everything (asynchronous replication) loses
acknowledged writes, and the promoted ledger is consistent without them: `jackpot audit`
says the books balance, and a retry of a lost key applies it again. The newest signed
ledger checkpoint is the one record outside the database: at once on a change (and at
start, without the root check), the checkpoint's leaves are compared with the database's
(ledger_store.compare_with_checkpoint). Leaves checkpointed but missing are reported by
index (log, /health, `jackpot_checkpoint_leaves_missing`), and the checkpointer stops
signing: a checkpoint over the new primary's leaves would bless a history that dropped
rows an earlier checkpoint covers.

The comparison runs in a thread on a connection of its own, opened with the same bounds as
every other connection of the server (adapters.database.connection_kwargs: the per-host
DB_CONNECT_TIMEOUT, and the side pool's statement timeout, since it may read every leaf),
so it always ends; `stop` waits for it to end rather than leave the thread behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from jackpot_grpc.adapters import ledger_store
from jackpot_grpc.adapters.database import bounded_conninfo
from jackpot_grpc.adapters.repository import ClusterIdentity
from jackpot_grpc.config import Settings
from jackpot_grpc.ledger.checkpoint import Checkpoint
from jackpot_grpc.text.report_values import error_text, iso_time

log = logging.getLogger(__name__)

RANGES_SHOWN = 20  # missing index ranges named in /health and the log (all are counted)
APPLICATION_NAME = "jackpot-failover-watch"
STOP_WAIT = 15.0  # the longest `stop` waits for a comparison in flight (s)


def _ranges_text(ranges: list[tuple[int, int]]) -> str:
    shown = [str(a) if a == b else f"{a}-{b}" for a, b in ranges[:RANGES_SHOWN]]
    more = len(ranges) - len(shown)
    return ", ".join(shown) + (f" and {more} more ranges" if more > 0 else "")


class FailoverWatch:
    def __init__(
        self,
        database_url: str,
        checkpoint: Callable[[], Checkpoint | None] | None = None,
        on_loss: Callable[[str], None] | None = None,
        *,
        settings: Settings,
    ) -> None:
        # Its own connection, with every bound the server's connections have; the root
        # check may read every leaf: the side pool's statement timeout.
        self._url, self._bound = bounded_conninfo(
            settings,
            database_url,
            application_name=APPLICATION_NAME,
            statement_timeout=settings.database.side_statement_timeout,
        )
        self._checkpoint = checkpoint  # the newest signed checkpoint, when the server signs
        self._on_loss = on_loss  # told when checkpointed leaves are missing (the signer halts)
        self.first: ClusterIdentity | None = None
        self.current: ClusterIdentity | None = None
        self.changes = 0
        self.last_change: dict[str, Any] | None = None
        self.comparison: ledger_store.CheckpointComparison | None = None
        self.compared_at: float | None = None
        self.comparison_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def connected(self, identity: ClusterIdentity) -> None:
        """The probe's connection reached `identity` (called on every new connection)."""
        previous = self.current
        self.current = identity
        if previous is None:
            self.first = identity
            log.info(
                "database system identifier %d, timeline %d",
                identity.system_identifier,
                identity.timeline,
            )
            self._compare(check_root=False)
            return
        if identity == previous:
            return
        self.changes += 1
        self.last_change = {
            "at": iso_time(time.time()),
            "from": _identity_report(previous),
            "to": _identity_report(identity),
        }
        what = (
            "a different database cluster"
            if identity.system_identifier != previous.system_identifier
            else "a new timeline (a standby was promoted)"
        )
        log.error(
            "database failover detected: %s; system identifier %d timeline %d -> system"
            " identifier %d timeline %d; comparing the newest ledger checkpoint",
            what,
            previous.system_identifier,
            previous.timeline,
            identity.system_identifier,
            identity.timeline,
        )
        self._compare(check_root=True)

    def _compare(self, *, check_root: bool) -> None:
        checkpoint = self._checkpoint() if self._checkpoint is not None else None
        if checkpoint is None:
            return
        self._task = asyncio.get_running_loop().create_task(
            self.compare(checkpoint, check_root=check_root)
        )

    async def compare(self, checkpoint: Checkpoint, *, check_root: bool = True) -> None:
        """The checkpoint's leaves against the database now; the findings are kept,
        logged and exported."""
        try:
            found = await asyncio.to_thread(
                ledger_store.compare_with_checkpoint,
                self._url,
                checkpoint.size,
                checkpoint.root_hash,
                check_root=check_root,
            )
        except Exception as exc:
            self.comparison_error = error_text(exc)
            log.error("ledger checkpoint comparison failed: %s", self.comparison_error)
            return
        self.comparison, self.compared_at, self.comparison_error = found, time.time(), None
        if found.missing:
            text = (
                f"{found.missing_count} of the {found.size} leaves of the newest signed"
                f" checkpoint are missing from the database: acknowledged writes were lost"
                f" (leaf indices {_ranges_text(found.missing)})"
            )
        elif found.root_matches is False:
            text = (
                f"the database's first {found.size} leaves do not give the newest signed"
                " checkpoint's root: the ledger's history changed"
            )
        else:
            log.info("the database holds every leaf of the newest checkpoint (%d)", found.size)
            return
        log.error("%s; checkpoint signing stops: see docs/OPERATIONS.md, failover", text)
        if self._on_loss is not None:
            self._on_loss(text)

    @property
    def lost(self) -> bool:
        found = self.comparison
        return found is not None and (bool(found.missing) or found.root_matches is False)

    def report(self) -> dict[str, Any]:
        """/health's `failover` check."""
        found = self.comparison
        return {
            "system_identifier": None
            if self.current is None
            else str(self.current.system_identifier),
            "timeline": None if self.current is None else self.current.timeline,
            "timeline_changes": self.changes,
            "last_change": self.last_change,
            "checkpoint_comparison": None
            if found is None
            else {
                "checked_at": iso_time(self.compared_at),
                "checkpoint_size": found.size,
                "leaves_present": found.present,
                "leaves_missing": found.missing_count,
                "missing_indices": [list(r) for r in found.missing[:RANGES_SHOWN]],
                "root_matches": found.root_matches,
            },
            "comparison_error": self.comparison_error,
        }

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "jackpot_database_timeline_changes",
            "Reconnections that found another database timeline or system identifier.",
            value=self.changes,
        )
        if self.current is not None:
            yield GaugeMetricFamily(
                "jackpot_database_timeline",
                "The timeline of the database the server writes to.",
                value=self.current.timeline,
            )
        found = self.comparison
        yield GaugeMetricFamily(
            "jackpot_checkpoint_leaves_missing",
            "Leaves of the newest signed ledger checkpoint the database no longer has.",
            value=0 if found is None else found.missing_count,
        )

    async def stop(self) -> None:
        """Wait for a comparison in flight to end (its thread cannot be interrupted; its
        connection's bounds end it, normally within the connect timeout), at most
        STOP_WAIT; past that the task is cancelled and the thread ends by its own bound."""
        task = self._task
        if task is None or task.done():
            return
        await asyncio.wait({task}, timeout=min(self._bound, STOP_WAIT))
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)


def _identity_report(identity: ClusterIdentity) -> dict[str, Any]:
    # As a string: JSON readers lose precision past 2^53.
    return {"system_identifier": str(identity.system_identifier), "timeline": identity.timeline}
