"""WatchPools' fan-out: one snapshot per process, told to every watcher.

The hub never reads the database for a watcher. It learns of changes two ways:

- from this process's write paths, after their COMMIT: every pool state the service
  commits goes into its PoolSnapshot, which tells the hub (`pools_changed`); a win also
  asks for the new wins to be read (`wins_committed`);
- from the database's change notifications (adapters.change_listener: `notified`), for
  what other processes and replicas commit; where no connection may LISTEN (behind
  PgBouncer), by reading every JACKPOT_SNAPSHOT_TTL while anyone watches.

DbPool updates are coalesced: at most one per `interval`, carrying the newest state of the
pools that changed, and spaced so that writing them takes at most about FAN_OUT_SHARE of
the event loop: with many watchers the updates slow down instead of starving the calls. Hits (wins)
are read from the ledger once per process, `id > last` (adapters.watch_store: exactly
once each, in commit order) and told at once.

Each watcher holds at most the newest pool state and a bounded queue of hits. A watcher
whose reader is slower than the updates keeps only the newest state and counts what it
skipped; one whose hits pile past `max_pending_hits` is cut off (WatcherTooSlow). Beyond
`max_watchers` in all, or `max_per_connection` on one connection, a new watcher is
refused (TooManyWatchers). close() ends every watcher (ShuttingDown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from jackpot_grpc.adapters import pool_store, watch_store
from jackpot_grpc.adapters.database import DbPool
from jackpot_grpc.adapters.unit_of_work import transaction
from jackpot_grpc.domain.errors import (
    DomainError,
    ShuttingDown,
    TooManyWatchers,
    Unavailable,
    WatcherTooSlow,
)
from jackpot_grpc.domain.model import GROUPS, Group, PoolState
from jackpot_grpc.domain.watch import Hit
from jackpot_grpc.service.snapshot import PoolSnapshot

log = logging.getLogger(__name__)

NOTIFY_WINS = "wins"  # payloads of migration 0009's triggers
NOTIFY_POOLS = "pools"
RETRY_READ_AFTER = 0.5  # a failed refresh is tried again after this long
# Writing pool updates to watchers may take about this share of the event loop: the next
# update waits for the last one's fan-out time divided by it (the calls keep the rest).
FAN_OUT_SHARE = 0.25
FAN_OUT_WAIT_MAX = 1.0  # the longest a fan-out holds the next update back


@dataclass(frozen=True)
class WatchLimits:
    interval: float = 0.1  # JACKPOT_WATCH_INTERVAL
    max_watchers: int = 10_000  # JACKPOT_WATCH_MAX
    max_per_connection: int = 100  # JACKPOT_WATCH_MAX_PER_CONNECTION
    max_pending_hits: int = 256  # hits a watcher may have untaken before it is cut off


@dataclass
class WatchCounters:
    """What Prometheus reads (entrypoints/watch_metrics.py)."""

    updates_sent: int = 0  # messages taken by watchers (pool updates and hits)
    updates_skipped: int = 0  # pool updates a slow watcher never got (a newer one did)
    watchers_cut: int = 0  # watchers ended for falling behind
    refused: int = 0  # watchers refused at a cap
    refreshes: int = 0  # database refreshes (pools and/or wins), per process


@dataclass
class Delivery:
    """What a watcher takes in one go: the newest pools (if changed), hits, skips."""

    pools: list[PoolState] | None
    hits: list[Hit]
    skipped: int


@dataclass(eq=False)
class Watcher:
    groups: frozenset[Group]
    connection: str
    max_pending_hits: int
    _pools: list[PoolState] | None = None
    _hits: deque[Hit] = field(default_factory=deque)
    _skipped: int = 0
    _versions: tuple[int, ...] = ()  # of the pools last given to it
    _ended: DomainError | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def offer_pools(self, pools: list[PoolState]) -> bool | None:
        """Keep the newest; True when an untaken update was overwritten (skipped), None
        when the watcher has (or holds) that state already."""
        chosen = [p for p in pools if p.group in self.groups]
        versions = tuple(p.version for p in chosen)
        if versions == self._versions:
            return None
        self._versions = versions
        skipped = self._pools is not None
        if skipped:
            self._skipped += 1
        self._pools = chosen
        self._wake.set()
        return skipped

    def start_with(self, pools: list[PoolState]) -> None:
        """The first delivery: the current pools, unless an update came meanwhile."""
        if self._pools is None:
            self._pools = [p for p in pools if p.group in self.groups]
            self._versions = tuple(p.version for p in self._pools)
            self._wake.set()

    def offer_hit(self, hit: Hit) -> bool:
        """Queue a hit of a watched pool; False when the watcher is too far behind."""
        if hit.group not in self.groups:
            return True
        if len(self._hits) >= self.max_pending_hits:
            return False
        self._hits.append(hit)
        self._wake.set()
        return True

    def end(self, reason: DomainError) -> None:
        if self._ended is None:
            self._ended = reason
        self._wake.set()

    async def next(self) -> Delivery:
        """Wait for something to send; raises the reason once the watcher was ended."""
        while True:
            if self._ended is not None:
                raise self._ended
            if self._pools is not None or self._hits:
                delivery = Delivery(self._pools, list(self._hits), self._skipped)
                self._pools, self._skipped = None, 0
                self._hits.clear()
                self._wake.clear()
                return delivery
            self._wake.clear()
            await self._wake.wait()


class WatchHub:
    def __init__(self, db_pool: DbPool, snapshot: PoolSnapshot, limits: WatchLimits) -> None:
        self._db_pool = db_pool
        self._snapshot = snapshot
        self.limits = limits
        self.counters = WatchCounters()
        self._watchers: set[Watcher] = set()
        self._by_connection: dict[str, int] = {}
        self._flushed: dict[Group, int] = {}  # pool versions last told to watchers
        self._flush_handle: asyncio.TimerHandle | None = None
        self._last_flush = float("-inf")
        self._fan_out_s = 0.0  # how long the last fan-out took (to 90 % of its watchers)
        self._to_deliver = 0  # watchers still to write the last update before that
        self._last_pools_read = float("-inf")
        self._want_wins = self._want_pools = False
        self._wake_reader = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        # The last win told; None until read when the first watcher comes (wins before
        # it are not hits), and again after the last one left (nothing is read meanwhile).
        self._last_win_id: int | None = None
        self._ready = asyncio.Event()  # set once _last_win_id is known
        self._epoch = 0  # moves when the watchers start again from none
        self._closed: DomainError | None = None
        # Tells the change listener whether anyone watches (None: no listener).
        self._listen: Callable[[bool], None] | None = None
        snapshot.subscribe(self.pools_changed)

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def start(
        self, poll: float | None = None, listen: Callable[[bool], None] | None = None
    ) -> None:
        """Start the reader. With `poll` (no LISTEN possible, e.g. behind PgBouncer), the
        pools and new wins are read every `poll` seconds while anyone watches. `listen`:
        told True when the first watcher comes and False when the last one leaves (the
        change listener, adapters.change_listener, listens only meanwhile)."""
        self._listen = listen
        self._reader = asyncio.create_task(self._read_loop(), name="watch-hub-reader")
        if poll is not None:
            self._poller = asyncio.create_task(self._poll(poll), name="watch-hub-poller")

    async def _poll(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            if self._watchers:
                self.notified("poll")

    async def close(self, reason: DomainError | None = None) -> None:
        """End every watcher (ShuttingDown: clients reconnect elsewhere), refuse new ones."""
        self._closed = reason or ShuttingDown("server is shutting down; reconnect elsewhere")
        for watcher in list(self._watchers):
            watcher.end(self._closed)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        for task in (self._reader, self._poller):
            if task is not None:
                task.cancel()
                await asyncio.wait({task}, timeout=2.0)
        self._reader = self._poller = None

    # --- watchers --------------------------------------------------------------------------

    @contextlib.contextmanager
    def watch(self, groups: Sequence[Group], connection: str) -> Iterator[Watcher]:
        """A watcher of `groups` (empty: all) whose first delivery is the current pools."""
        if self._closed is not None:
            raise self._closed
        if len(self._watchers) >= self.limits.max_watchers:
            self.counters.refused += 1
            raise TooManyWatchers(
                f"this server serves {self.limits.max_watchers} watchers already; retry"
                " with backoff"
            )
        mine = self._by_connection.get(connection, 0)
        if mine >= self.limits.max_per_connection:
            self.counters.refused += 1
            raise TooManyWatchers(
                f"more than {self.limits.max_per_connection} watchers on this connection"
            )
        watcher = Watcher(frozenset(groups or GROUPS), connection, self.limits.max_pending_hits)
        self._watchers.add(watcher)
        if len(self._watchers) == 1:  # the first: learn where the ledger stands now
            self._epoch += 1
            self._last_win_id = None
            self._ready.clear()
            self.notified(NOTIFY_WINS)
            if self._listen is not None:
                self._listen(True)
        self._by_connection[connection] = mine + 1
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)
            left = self._by_connection[connection] - 1
            if left:
                self._by_connection[connection] = left
            else:
                del self._by_connection[connection]
            if not self._watchers and self._listen is not None:
                self._listen(False)

    def delivered(self, delivery: Delivery, messages: int) -> None:
        self.counters.updates_sent += messages
        if delivery.pools is not None and self._to_deliver > 0:
            self._to_deliver -= 1
            if self._to_deliver == 0:  # most watchers have it: the fan-out's time
                self._fan_out_s = time.monotonic() - self._last_flush

    # --- changes ---------------------------------------------------------------------------

    def pools_changed(self) -> None:
        """The snapshot moved (after a commit here, or a refresh): one flush per interval."""
        if self._flush_handle is not None or self._closed is not None:
            return
        loop = asyncio.get_running_loop()
        at = self._last_flush + max(self.limits.interval, self._fan_out_s / FAN_OUT_SHARE)
        self._flush_handle = loop.call_later(max(0.0, at - time.monotonic()), self._flush)

    def wins_committed(self) -> None:
        """A win was committed by this process: read the new wins now."""
        self.notified(NOTIFY_WINS)

    async def ready(self, within: float) -> None:
        """Wait until the hub knows the ledger's last win (the first watcher's read), so a
        win committed after a watcher's first message is surely told to it."""
        try:
            await asyncio.wait_for(self._ready.wait(), within)
        except TimeoutError:
            raise Unavailable("the pools' changes cannot be read now; retry") from None

    def notified(self, payload: str) -> None:
        """A database notification (or a reconnection: read everything). Nothing is read
        while nobody watches (GetPools reads for itself)."""
        if not self._watchers:
            return
        if payload != NOTIFY_POOLS:
            self._want_wins = True
        if payload != NOTIFY_WINS:
            self._want_pools = True
        self._wake_reader.set()

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        if self._to_deliver > 0 and now - self._last_flush < FAN_OUT_WAIT_MAX:
            # The last update is still being written to most watchers: not yet.
            self._flush_handle = loop.call_later(self.limits.interval / 4, self._flush)
            return
        self._flush_handle = None
        self._last_flush = now
        pools = self._snapshot.latest()
        changed = [p for p in pools if self._flushed.get(p.group) != p.version]
        if not changed:
            return
        self._flushed.update((p.group, p.version) for p in changed)
        groups = {p.group for p in changed}
        offered = 0
        for watcher in self._watchers:
            if not watcher.groups & groups:
                continue
            told = watcher.offer_pools(pools)
            offered += told is not None
            self.counters.updates_skipped += bool(told)
        # The fan-out is timed until 90 % of these watchers have it written (the slowest
        # readers do not count: they skip instead).
        self._to_deliver = int(offered * 0.9)
        if self._to_deliver == 0:
            self._fan_out_s = 0.0

    def _tell_hits(self, hits: list[Hit]) -> None:
        for hit in hits:
            for watcher in list(self._watchers):
                if not watcher.offer_hit(hit):
                    self.counters.watchers_cut += 1
                    watcher.end(
                        WatcherTooSlow(
                            f"this stream fell {self.limits.max_pending_hits} hits behind;"
                            " reconnect (the new stream starts from the current state)"
                        )
                    )

    # --- the one reader of the database ----------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            await self._wake_reader.wait()
            self._wake_reader.clear()
            if self._want_pools and not self._want_wins:
                # DbPool states are coalesced anyway: read them at most once per interval.
                wait = self._last_pools_read + self.limits.interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            wins, pools = self._want_wins, self._want_pools
            self._want_wins = self._want_pools = False
            if not self._watchers:
                continue  # they left meanwhile: nobody to tell
            try:
                await self._refresh(wins=wins, pools=pools)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: try again shortly
                log.warning("watch refresh failed (%s); retrying", exc)
                self._want_wins |= wins
                self._want_pools |= pools
                await asyncio.sleep(RETRY_READ_AFTER)
                self._wake_reader.set()

    async def _refresh(self, *, wins: bool, pools: bool) -> None:
        self.counters.refreshes += 1
        epoch = self._epoch
        last, first, hits = self._last_win_id, None, []
        async with transaction(self._db_pool) as conn:
            states = await pool_store.read_pools(conn) if pools else None
            if wins and last is None:
                first = await watch_store.last_win_id(conn)
            elif wins and last is not None:
                hits = await watch_store.wins_after(conn, last)
        if epoch != self._epoch:
            return  # the watchers started again meanwhile: their own first read follows
        if first is not None:
            self._last_win_id = first
            self._ready.set()
        if states is not None:
            self._last_pools_read = time.monotonic()
            self._snapshot.replace(states)
        if hits:
            self._last_win_id = hits[-1].win_id
            self._ready.set()
            self._tell_hits(hits)
            if len(hits) >= watch_store.WINS_PER_READ:
                self.notified(NOTIFY_WINS)  # more are waiting
