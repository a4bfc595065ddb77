"""The readiness probe's write: one heartbeat row per server process.

A probe that only reads says SERVING while every COMMIT waits on a synchronous standby
that is gone. The probe writes this row (inside its bound) when no other write of the
process committed within a probe interval, so readiness covers writes (docs/DEPLOY.md,
"Replication and failover"). Rows of processes gone for a day are pruned by the probe.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE write_heartbeat (
            process text PRIMARY KEY,
            beat_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE write_heartbeat")
