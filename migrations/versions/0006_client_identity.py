"""Caller identity: the config audit records the authenticated client (issue 12).

`actor` stays what it was, the free text the request carried (a person's name, a ticket);
`client` is who the service authenticated (a name from the clients file, "admin" for
JACKPOT_ADMIN_TOKEN, "anonymous" in open mode). Rows written before this revision have
no client: NULL, not a guess.

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-01
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE config_audit ADD COLUMN client text")


def downgrade() -> None:
    op.execute("ALTER TABLE config_audit DROP COLUMN client")
