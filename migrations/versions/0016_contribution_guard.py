"""The contribution batch's guard: one statement instead of a transaction of four.

`contribution_guard(expected, clients, keys)` locks every pool row in lock order (as
every writer does, so writers still queue instead of deadlocking) and answers why a batch
planned without a round trip must not be written, or NULL when it may:

- 'pools moved': a pool's `version` is not the one the batch was planned against (in
  lock order). Every writer of a pool row moves its version, so an equal version is an
  unchanged pool: the shares planned against it are the shares the locks would give.
- 'key exists': one of the (client, idempotency key) pairs is already in the ledger, so
  the batch has a replay or a refused key (the two-flight path answers those).

It is VOLATILE, so each query in it takes a fresh snapshot: the key lookup runs after the
locks are held and sees every contribution committed before them, like the two-flight
path's lookup. The service calls it from a CTE of the batch's write
(adapters.contribution_store.GUARDED_RECORD), whose writes are gated on its answer: on an
autocommit connection the batch is then one statement, one round trip, its own commit.
The share rules stay in the service; the function only checks.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

GUARD = """
CREATE FUNCTION contribution_guard(expected bigint[], clients text[], keys text[])
RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    seen bigint[];
BEGIN
    SELECT array_agg(locked.version ORDER BY locked.lock_order) INTO seen
    FROM (SELECT version, lock_order FROM jackpots ORDER BY lock_order FOR UPDATE) AS locked;
    IF seen IS DISTINCT FROM expected THEN
        RETURN 'pools moved';
    END IF;
    IF cardinality(keys) > 0 AND EXISTS (
        SELECT 1 FROM contributions
        WHERE idempotency_key IS NOT NULL
          AND (client, idempotency_key) IN (SELECT * FROM unnest(clients, keys))
    ) THEN
        RETURN 'key exists';
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(GUARD)


def downgrade() -> None:
    op.execute("DROP FUNCTION contribution_guard(bigint[], text[], text[])")
