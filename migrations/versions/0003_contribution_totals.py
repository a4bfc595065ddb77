"""Contribution totals: the ledger's row count and wager sum, kept with every batch.

GetStatistics reported `count(*)` and `sum(wager_amount)` over the whole contribution
ledger on every call, a scan that grows with the ledger. This one-row table is moved by
the same statement that moves the pools and writes the ledger rows, under the pool locks
(so in lock order after them: no new deadlock), and `jackpot audit` checks it against the
ledger like every other running total. The upgrade fills it from the ledger as it stands.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE contribution_totals (
            -- One row: the key can only be true.
            id                 boolean PRIMARY KEY DEFAULT true CHECK (id),
            contribution_count bigint NOT NULL CHECK (contribution_count >= 0),
            -- numeric, not bigint: a lifetime sum of wagers may pass int64, and a report's
            -- counter must never be the reason a contribution fails.
            total_wagered      numeric(40, 0) NOT NULL CHECK (total_wagered >= 0)
        )
        """
    )
    op.execute(
        """
        INSERT INTO contribution_totals (contribution_count, total_wagered)
        SELECT count(*), coalesce(sum(wager_amount), 0) FROM contributions
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE contribution_totals")
