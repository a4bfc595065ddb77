"""Ledger receipts: every ledger row takes its leaf index in the transaction that writes it.

- `ledger_head`: one row, `size`, the number of leaf indexes handed out. Every ledger
  writer (a contribution batch, a win and its top-up, a config change, a pool's
  suspension, resumption or scheduled change) adds its rows'
  count to it in its own transaction, after taking the pool locks, and gives its rows the
  indexes it moved past: the row lock orders the writers' commits, so the indexes are
  gap-free and in commit order across every process on the database (a rolled-back
  transaction returns its indexes with it). `receipts_from` is the size when this revision
  ran: every row from that leaf on carries its index.
- `leaf_index` on contributions, wins, seed_fundings, config_audit and pool_lifecycle
  (0012's suspensions, resumptions and scheduled changes): the row's leaf index, so a
  write answers with it (the receipt) and an idempotent replay answers the same (rows
  already there keep their leaves in `ledger_leaves`; theirs stays NULL). Its
  default, `ledger_claim_leaf()`, claims one index per row for an insert that names none
  (one statement per row: the service's batch claims a whole batch's in one). A row with
  neither an index nor a leaf is one written past the ledger: the audit names it.
- Rows committed after the last leaf (0010's rule: a ledger_seq above the last leaf's, or
  every row when nothing is a leaf yet) get their indexes here, in that same order, so
  the first checkpoint gives them the leaves 0010 would have.

`ledger_leaves` stays the log of leaf hashes: the checkpoint signer hashes the rows whose
index is at or above its size, off the money path.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# The order of a tie in 0010's rule (ledger_store.TABLES), pool_lifecycle (0012) last.
TABLES = ("seed_fundings", "contributions", "wins", "config_audit", "pool_lifecycle")

# The rows no leaf covers yet, ordered as 0010's assign_leaves_by_sequence orders them (unsequenced
# rows first by time, then by ledger_seq; ties by table, then id), numbered from the
# log's size.
PENDING = """CREATE TEMPORARY TABLE pending_leaves ON COMMIT DROP AS
WITH top AS (SELECT count(*) AS size, coalesce(max(ledger_seq), 0) AS seq FROM ledger_leaves),
rows AS (
    SELECT 'seed_fundings' AS tbl, 0 AS rank, id, ledger_seq, created_at AS at
    FROM seed_fundings
    UNION ALL SELECT 'contributions', 1, id, ledger_seq, created_at FROM contributions
    UNION ALL SELECT 'wins', 2, id, ledger_seq, created_at FROM wins
    UNION ALL SELECT 'config_audit', 3, id, ledger_seq, changed_at FROM config_audit
    UNION ALL SELECT 'pool_lifecycle', 4, id, ledger_seq, changed_at FROM pool_lifecycle)
SELECT r.tbl, r.id, top.size - 1 + row_number() OVER (
        ORDER BY r.ledger_seq IS NOT NULL, coalesce(r.ledger_seq, 0), r.at, r.rank, r.id)
    AS leaf_index
FROM rows r CROSS JOIN top
WHERE CASE WHEN top.size = 0 THEN true ELSE r.ledger_seq > top.seq END"""


def upgrade() -> None:
    # No writer may write a ledger row while the indexes are handed out.
    op.execute("LOCK TABLE jackpots IN EXCLUSIVE MODE")
    op.execute(
        """CREATE TABLE ledger_head (
               one           boolean PRIMARY KEY DEFAULT true CHECK (one),
               size          bigint NOT NULL CHECK (size >= 0),
               receipts_from bigint NOT NULL CHECK (receipts_from >= 0))"""
    )
    op.execute(
        """CREATE FUNCTION ledger_claim_leaf() RETURNS bigint LANGUAGE sql VOLATILE AS $$
               UPDATE ledger_head SET size = size + 1 RETURNING size - 1
           $$"""
    )
    op.execute(PENDING)
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ADD COLUMN leaf_index bigint")
        op.execute(f"CREATE UNIQUE INDEX {table}_leaf_index ON {table} (leaf_index)")
        # The rows waiting for a leaf take theirs (an UPDATE the append-only trigger refuses
        # to everyone else; this revision runs as the owner).
        op.execute(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only")
        op.execute(
            f"UPDATE {table} t SET leaf_index = p.leaf_index FROM pending_leaves p"
            f" WHERE p.tbl = '{table}' AND p.id = t.id"
        )
        op.execute(f"ALTER TABLE {table} ENABLE TRIGGER {table}_append_only")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN leaf_index SET DEFAULT ledger_claim_leaf()")
    op.execute(
        """INSERT INTO ledger_head (size, receipts_from)
           SELECT n, n FROM (SELECT (SELECT count(*) FROM ledger_leaves)
                                    + (SELECT count(*) FROM pending_leaves) AS n) s"""
    )


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP INDEX {table}_leaf_index")
        op.execute(f"ALTER TABLE {table} DROP COLUMN leaf_index")
    op.execute("DROP FUNCTION ledger_claim_leaf()")
    op.execute("DROP TABLE ledger_head")
