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
- Guards for a release that knows none of this (a rollback, a mixed-version deployment;
  docs/DEPLOY.md, "Rolling back"): the database itself refuses a contribution row that
  gives a suspended pool a share or a rate (`contributions_respect_suspension`, once per
  statement), a win on a suspended pool, and a win while the pool has a pending change
  (`wins_respect_lifecycle`: this code applies the change in the win's transaction before
  inserting the win, an older one would pay under the old config and never apply it).

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
GROUPS = ("minor", "major", "mega")

# A share or a rate (NULL: the legacy "rate unknown", taken as sharing) for a suspended pool.
_SHARING = " OR ".join(
    f"(j.jackpot_group = '{g}' AND (n.{g}_amount <> 0 OR coalesce(n.{g}_rate, 1) <> 0))"
    for g in GROUPS
)

CONTRIBUTION_GUARD = f"""
CREATE FUNCTION contributions_respect_suspension() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    refused text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM jackpots WHERE suspended) THEN
        RETURN NULL;
    END IF;
    SELECT j.jackpot_group INTO refused
    FROM new_rows n JOIN jackpots j ON j.suspended AND ({_SHARING})
    LIMIT 1;
    IF refused IS NOT NULL THEN
        RAISE EXCEPTION 'the % pool is suspended: it takes no share of a wager', refused
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'a release that knows pool suspension writes its rate and share as 0';
    END IF;
    RETURN NULL;
END $$
"""

WIN_GUARD = """
CREATE FUNCTION wins_respect_lifecycle() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    pool record;
BEGIN
    SELECT suspended, pending_config IS NOT NULL AS pending INTO pool
    FROM jackpots WHERE jackpot_group = NEW.jackpot_group;
    IF pool.suspended THEN
        RAISE EXCEPTION 'the % pool is suspended: it pays no win', NEW.jackpot_group
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF pool.pending THEN
        RAISE EXCEPTION 'the % pool has a pending config change to apply before its win',
                NEW.jackpot_group
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'a release that knows apply_at_next_win applies it in the win''s'
                         ' transaction first';
    END IF;
    RETURN NEW;
END $$
"""


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
    op.execute(CONTRIBUTION_GUARD)
    op.execute(
        "CREATE TRIGGER contributions_respect_suspension AFTER INSERT ON contributions"
        " REFERENCING NEW TABLE AS new_rows"
        " FOR EACH STATEMENT EXECUTE FUNCTION contributions_respect_suspension()"
    )
    op.execute(WIN_GUARD)
    op.execute(
        "CREATE TRIGGER wins_respect_lifecycle BEFORE INSERT ON wins"
        " FOR EACH ROW EXECUTE FUNCTION wins_respect_lifecycle()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER wins_respect_lifecycle ON wins")
    op.execute("DROP FUNCTION wins_respect_lifecycle()")
    op.execute("DROP TRIGGER contributions_respect_suspension ON contributions")
    op.execute("DROP FUNCTION contributions_respect_suspension()")
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
