"""Ledger rows record their client; idempotency keys are scoped per client (issue 12).

`contributions.client` and `wins.client` name the authenticated client that wrote the row
(a name from the clients file, "admin" for JACKPOT_ADMIN_TOKEN, "anonymous" in open mode).
An idempotency key is unique per client, not per service: the unique indexes become
(client, idempotency_key), so two game backends can never collide on a key.

Rows written before this revision get "anonymous": not a guess, but the scope their keys
were taken in (until now every caller shared the one implicit client "anonymous"). An
open-mode service therefore keeps replaying its old keys across the upgrade. The column is
NOT NULL, so the unique index covers every keyed row (NULLs would never collide), and has
no default once filled: a row that does not say who wrote it is refused.

Seed fundings get no column: a top-up belongs to its win (`win_id`), and the others are
written by migrations and operators, not by clients.

The ADD COLUMN with a constant default is a catalogue change (no table rewrite); the index
swap builds each new index in this transaction, holding writes back while it does.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = ("contributions", "wins")


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ADD COLUMN client text NOT NULL DEFAULT 'anonymous'")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN client DROP DEFAULT")
        op.execute(
            f"CREATE UNIQUE INDEX {table}_client_idempotency_key"
            f" ON {table} (client, idempotency_key) WHERE idempotency_key IS NOT NULL"
        )
        op.execute(f"DROP INDEX {table}_idempotency_key")


def downgrade() -> None:
    # Fails (unique violation) if two clients have used the same key: the old scope cannot
    # hold both rows.
    for table in TABLES:
        op.execute(
            f"CREATE UNIQUE INDEX {table}_idempotency_key"
            f" ON {table} (idempotency_key) WHERE idempotency_key IS NOT NULL"
        )
        op.execute(f"DROP INDEX {table}_client_idempotency_key")
        op.execute(f"ALTER TABLE {table} DROP COLUMN client")
