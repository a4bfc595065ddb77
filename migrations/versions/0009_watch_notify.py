"""Change notifications for WatchPools: every committed change of the pools is announced.

A statement-level AFTER trigger calls pg_notify on channel `jackpot_changes`:

- `jackpots` updated (a contribution batch, a win, a config change): payload `pools`;
- `wins` inserted: payload `wins`, so listeners read the new wins at once (hits).

PostgreSQL delivers a notification only when its transaction commits (and a rolled-back
dry run sends none), and folds identical payloads of one transaction into one. Every
server process LISTENs on one connection and refreshes its one pool snapshot from the
database when told (jackpot_grpc.adapters.change_listener): a win paid by another process
or replica reaches this one's watchers. No Python write path changes: whatever writes
these tables, a migration or an operator too, is announced.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

CHANNEL = "jackpot_changes"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE FUNCTION jackpot_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', TG_ARGV[0]);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER jackpots_notify_change AFTER UPDATE ON jackpots"
        " FOR EACH STATEMENT EXECUTE FUNCTION jackpot_notify_change('pools')"
    )
    op.execute(
        "CREATE TRIGGER wins_notify_change AFTER INSERT ON wins"
        " FOR EACH STATEMENT EXECUTE FUNCTION jackpot_notify_change('wins')"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER wins_notify_change ON wins")
    op.execute("DROP TRIGGER jackpots_notify_change ON jackpots")
    op.execute("DROP FUNCTION jackpot_notify_change()")
