"""Pool lifecycle and hit history (docs/ARCHITECTURE.md, "Pool lifecycle").

- `jackpots.suspended`, `.suspended_reason`: a suspended pool keeps its amount, takes no
  share of a wager and refuses wins.
- `jackpots.pending_config`: a config change scheduled with `apply_at_next_win`, applied in
  the transaction of the pool's next win (NULL: none pending).
- `pool_lifecycle`: the ledger of those changes (suspend, resume, schedule_config), one row
  each, drawing `ledger_seq` under the pool locks like every ledger writer, append-only,
  and a leaf of the tamper-evident log (event type 5, docs/LEDGER.md).
- `wins_newest`, `wins_group_newest`: ListWins pages newest first, by keyset
  (created_at, id) descending, over every pool or one.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

LEAF_TABLES_BEFORE = "'contributions', 'wins', 'seed_fundings', 'config_audit'"


def upgrade() -> None:
    op.execute(
        """ALTER TABLE jackpots
               ADD COLUMN suspended boolean NOT NULL DEFAULT false,
               ADD COLUMN suspended_reason text NOT NULL DEFAULT '',
               ADD COLUMN pending_config jsonb"""
    )
    op.execute(
        """
        CREATE TABLE pool_lifecycle (
            id            bigserial PRIMARY KEY,
            jackpot_group text NOT NULL REFERENCES jackpots (jackpot_group),
            action        text NOT NULL
                          CHECK (action IN ('suspend', 'resume', 'schedule_config')),
            client        text NOT NULL,
            actor         text NOT NULL DEFAULT '',
            reason        text NOT NULL DEFAULT '',
            -- schedule_config only: the change as asked (keys: contribution_rate,
            -- seed_amount, max_amount, clear_max_amount; absent keys keep the value)
            pending       jsonb CHECK ((action = 'schedule_config') = (pending IS NOT NULL)),
            changed_at    timestamptz NOT NULL DEFAULT now(),
            ledger_seq    bigint NOT NULL DEFAULT nextval('ledger_seq')
        )
        """
    )
    op.execute("CREATE UNIQUE INDEX pool_lifecycle_ledger_seq ON pool_lifecycle (ledger_seq)")
    op.execute(
        "CREATE TRIGGER pool_lifecycle_append_only BEFORE UPDATE OR DELETE ON pool_lifecycle"
        " FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
    )
    op.execute(
        "CREATE TRIGGER pool_lifecycle_no_truncate BEFORE TRUNCATE ON pool_lifecycle"
        " FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
    )
    op.execute("ALTER TABLE ledger_leaves DROP CONSTRAINT ledger_leaves_ledger_table_check")
    op.execute(
        "ALTER TABLE ledger_leaves ADD CONSTRAINT ledger_leaves_ledger_table_check"
        f" CHECK (ledger_table IN ({LEAF_TABLES_BEFORE}, 'pool_lifecycle'))"
    )
    op.execute("CREATE INDEX wins_newest ON wins (created_at DESC, id DESC)")
    op.execute(
        "CREATE INDEX wins_group_newest ON wins (jackpot_group, created_at DESC, id DESC)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX wins_group_newest")
    op.execute("DROP INDEX wins_newest")
    op.execute("ALTER TABLE ledger_leaves DROP CONSTRAINT ledger_leaves_ledger_table_check")
    op.execute(
        "ALTER TABLE ledger_leaves ADD CONSTRAINT ledger_leaves_ledger_table_check"
        f" CHECK (ledger_table IN ({LEAF_TABLES_BEFORE}))"
    )
    op.execute("DROP TABLE pool_lifecycle")
    op.execute(
        """ALTER TABLE jackpots DROP COLUMN pending_config, DROP COLUMN suspended_reason,
               DROP COLUMN suspended"""
    )
