"""`ledger_leaves` loses its `ledger_seq` index: the checkpoint signer inserts a row per new
leaf, and keeping an index nobody reads cost about 0.6 µs of PostgreSQL's CPU per leaf
(a fifth of the insert; BENCHMARKS.md, "The tamper-evident ledger").

The index served 0010's rule (the rows with a ledger_seq above the last leaf's become the
next leaves: `max(ledger_seq)`), which 0013 replaced by the leaf index every row claims as
it is written; 0010 and 0013 run before this revision, with the index. The column stays:
the audit compares each row's `ledger_seq` with the one its leaf recorded.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX ledger_leaves_ledger_seq")


def downgrade() -> None:
    op.execute("CREATE INDEX ledger_leaves_ledger_seq ON ledger_leaves (ledger_seq)")
