"""`ledger_leaves`' UNIQUE (ledger_table, row_id) narrows to the leaves from before
receipts (0013): the checkpoint signer inserts a row per new leaf, and that index cost
about 0.9 µs of PostgreSQL's CPU per leaf (BENCHMARKS.md, "The ledger signer's cost per
row"), for lookups only rows without a leaf index need.

Since 0013 every ledger row carries its leaf index (`leaf_index` in its own table): a
row's leaf is found by that index. Only rows written before 0013 (their `leaf_index` is
NULL) are found by (table, id), and all their leaves are below `ledger_head.receipts_from`,
which never changes after 0013. So:

- `ledger_receipts_from()`: an IMMUTABLE function returning this database's
  `receipts_from`, written here as a constant (it is one: no writer changes it).
- The unique index covers only `leaf_index < ledger_receipts_from()`. A lookup by
  (table, id) states that same condition, so the planner proves the partial index
  applies (both sides fold to the same constant) and it stays an index scan. On a
  database installed fresh the index holds the initial seeds' leaves only; new leaves
  are never in it.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A DO block, so offline SQL (`jackpot migrate --sql`) writes the value of the
    # database it runs on too.
    op.execute(
        """DO $$
        BEGIN
            EXECUTE format(
                'CREATE FUNCTION ledger_receipts_from() RETURNS bigint'
                ' LANGUAGE sql IMMUTABLE PARALLEL SAFE AS %L',
                format('SELECT %s::bigint',
                       (SELECT coalesce(max(receipts_from), 0) FROM ledger_head)));
        END
        $$"""
    )
    op.execute("ALTER TABLE ledger_leaves DROP CONSTRAINT ledger_leaves_ledger_table_row_id_key")
    op.execute(
        "CREATE UNIQUE INDEX ledger_leaves_row_before_receipts"
        " ON ledger_leaves (ledger_table, row_id) WHERE leaf_index < ledger_receipts_from()"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ledger_leaves_row_before_receipts")
    op.execute("ALTER TABLE ledger_leaves ADD UNIQUE (ledger_table, row_id)")
    op.execute("DROP FUNCTION ledger_receipts_from()")
