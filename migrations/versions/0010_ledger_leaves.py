"""Tamper-evident ledger: every ledger row is a leaf of one append-only log (docs/LEDGER.md).

- `config_audit.ledger_seq`: config changes draw the shared sequence too (under the pool
  locks, like every other ledger writer), so they take their place in commit order.
- `ledger_leaves`: the log. Leaf i is one row (table, id), gap-free from 0, in commit order;
  it keeps the row's ledger_seq (NULL: a row older than the sequence) and the leaf hash it
  had when it became a leaf, so an audit can name the first row that changed.
- Existing rows become leaves now, in their current order: rows without a sequence first
  (their order across tables is not known: by time, then seed fundings, contributions, wins,
  config changes), then the sequenced rows by ledger_seq. (Offline, as SQL, the leaves are
  left to the first checkpoint, which gives them the same way.)
- A trigger refuses UPDATE, DELETE and TRUNCATE of the ledger tables, for every role: the
  books are append-only. (A superuser can still bypass triggers; the signed checkpoints,
  kept outside the database, are what catches that.)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-12
"""

from alembic import context, op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

LEDGER_TABLES = ("contributions", "wins", "seed_fundings", "config_audit", "ledger_leaves")


def upgrade() -> None:
    # No writer may draw a sequence number while the existing rows become leaves.
    op.execute("LOCK TABLE jackpots IN EXCLUSIVE MODE")
    op.execute("ALTER TABLE config_audit ADD COLUMN ledger_seq bigint")
    op.execute("ALTER TABLE config_audit ALTER COLUMN ledger_seq SET DEFAULT nextval('ledger_seq')")
    op.execute("CREATE UNIQUE INDEX config_audit_ledger_seq ON config_audit (ledger_seq)")
    op.execute(
        """
        CREATE TABLE ledger_leaves (
            leaf_index   bigint PRIMARY KEY CHECK (leaf_index >= 0),
            ledger_table text NOT NULL
                         CHECK (ledger_table IN ('contributions', 'wins', 'seed_fundings',
                                                 'config_audit')),
            row_id       bigint NOT NULL,
            ledger_seq   bigint,
            leaf_hash    bytea NOT NULL CHECK (length(leaf_hash) = 32),
            UNIQUE (ledger_table, row_id)
        )
        """
    )
    op.execute("CREATE INDEX ledger_leaves_ledger_seq ON ledger_leaves (ledger_seq)")
    op.execute(
        """
        CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    for table in LEDGER_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
        )
    if not context.is_offline_mode():
        from jackpot_grpc.adapters.ledger_store import assign_leaves_by_sequence

        # The ledger tables of this revision (later revisions add more).
        assign_leaves_by_sequence(op.get_bind().connection.driver_connection, LEDGER_TABLES[:4])


def downgrade() -> None:
    for table in LEDGER_TABLES:
        op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
        op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
    op.execute("DROP FUNCTION ledger_append_only()")
    op.execute("DROP TABLE ledger_leaves")
    op.execute("ALTER TABLE config_audit DROP COLUMN ledger_seq")
