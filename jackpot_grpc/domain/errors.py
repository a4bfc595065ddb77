"""Domain errors. Entry points map each class to one status code (see
entrypoints/status_mapping.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """Base of every error the service raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """The request is malformed; nothing was changed."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        joined = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(f"invalid request: {joined}")
        self.violations = violations

    @classmethod
    def of(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class RateSumExceeded(InvalidArgument):
    """A config change would make the three pools' rates sum above the bound: each wager
    would then put more into the pools than it is."""


class IdempotencyKeyReused(DomainError):
    """An idempotency key already bound to a different request. Not retryable: the same
    request replays, a different one needs a new key. Nothing was written."""


class InsufficientPool(DomainError):
    """A win asks for more than the pool holds."""


class PoolEmpty(InsufficientPool):
    """A whole-pool win on a pool with nothing to pay."""


class PoolSuspended(DomainError):
    """A win on a pool taken out of play (SuspendPool); resume it first."""


class OverflowTargetCycle(DomainError):
    """The pools' overflow targets, as stored, lead back to a pool: a wager cannot be
    split without losing what goes round (the service refuses such a config; only a
    direct edit of the database makes one)."""


class OutOfRange(DomainError):
    """An amount would leave the range the ledger can hold (int64)."""


class PoolNotFound(DomainError):
    pass


class LeafNotInCheckpoint(DomainError):
    """A ledger proof asked for a leaf no signed checkpoint covers yet (or a row that is
    not a leaf yet): retry after the next checkpoint."""


class NoLedgerCheckpoint(DomainError):
    """Ledger proofs asked of a server that signs no checkpoints (no ledger key)."""


class VersionConflict(DomainError):
    """Optimistic concurrency: the pool changed since the caller read it."""


class Unavailable(DomainError):
    """The database cannot be reached."""


class ShuttingDown(Unavailable):
    """The service is stopping; another instance (or this one, restarted) can answer."""


class CommitOutcomeUnknown(Unavailable):
    """A COMMIT was sent and its answer never came (JACKPOT_COMMIT_TIMEOUT), or came with
    the server's warning that the synchronous-replication wait was cancelled: the rows may
    or may not be committed (and replicated). Never acknowledged; the same call with the
    same idempotency key settles it (replays the row, or applies it once)."""


class LockTimeout(Unavailable):
    """A statement waited past the lock or statement timeout; nothing was written, and
    the same call (same idempotency key) may be retried."""


class Overloaded(DomainError):
    """A queue is full (contributions, or callers waiting for a database connection);
    the caller should back off and retry. `queue` says which (the refusals counter's
    layer): the caller sees the same OVERLOADED either way."""

    CONTRIBUTIONS = "contributions"
    DATABASE_POOL = "database_pool"  # DB_POOL_MAX_WAITING callers already wait

    def __init__(self, message: str, *, queue: str = CONTRIBUTIONS) -> None:
        super().__init__(message)
        self.queue = queue


class Unauthenticated(DomainError):
    pass


class PermissionDenied(DomainError):
    pass


class RateLimited(DomainError):
    """A caller that keeps failing authentication is refused for a while."""


class DeadlineTooShort(Overloaded):
    """The caller's deadline is shorter than calls take now: refused before any work."""


class TooManyWatchers(Overloaded):
    """WatchPools: the server (or this connection) already serves as many watchers as it
    may; back off and retry, perhaps on another replica."""


class WatcherTooSlow(Overloaded):
    """WatchPools: the stream's reader fell too far behind and was cut off; reconnect, and
    the new stream starts from the current state."""
