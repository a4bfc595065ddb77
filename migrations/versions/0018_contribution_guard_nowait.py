"""The contribution guard takes the pool locks NOWAIT.

The batch's one statement (0016's `contribution_guard`, called from
adapters.contribution_store.GUARDED_RECORD) is its own commit, so the service arms the
commit bound (JACKPOT_COMMIT_TIMEOUT) as it sends it. Waiting for another writer's pool
locks inside that bound could answer COMMIT_OUTCOME_UNKNOWN for a batch the backend then
went on to write. With NOWAIT a held lock fails the statement at once (lock_not_available,
nothing written) and the service sends the batch the two flights, which wait for the lock
outside the bound.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

NOWAIT_GUARD = """
CREATE OR REPLACE FUNCTION contribution_guard(expected bigint[], clients text[], keys text[])
RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    seen bigint[];
BEGIN
    SELECT array_agg(locked.version ORDER BY locked.lock_order) INTO seen
    FROM (SELECT version, lock_order FROM jackpots ORDER BY lock_order FOR UPDATE NOWAIT) AS locked;
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

# 0016's guard, as the downgrade puts it back: the same function, waiting for the locks.
WAITING_GUARD = NOWAIT_GUARD.replace("FOR UPDATE NOWAIT", "FOR UPDATE")


def upgrade() -> None:
    op.execute(NOWAIT_GUARD)


def downgrade() -> None:
    op.execute(WAITING_GUARD)
