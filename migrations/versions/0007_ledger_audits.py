"""Ledger audits: the background audit's results, so replicas share one audit per interval.

Every server audits the books every JACKPOT_AUDIT_INTERVAL seconds. With several replicas
on one database, the replica whose turn it is (it holds a transaction-scoped advisory lock,
and no replica has recorded an audit since its own previous turn) runs the full-ledger
audit and appends its result here; the others read the newest row and report it with its
age and who ran it (jackpot_grpc.adapters.audit_store). Append-only, so writers never
conflict; rows older than the metrics retention are pruned with the metrics history.

Revision ID: 0007
Revises: 0003
Create Date: 2026-12-08
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE ledger_audits (
            id          bigserial PRIMARY KEY,
            -- The audit's snapshot: the start of the REPEATABLE READ transaction it read.
            audited_at  timestamptz NOT NULL DEFAULT now(),
            host        text NOT NULL,
            pid         integer NOT NULL,
            balanced    boolean NOT NULL,
            -- Every pool and the contribution totals, as the audit found them.
            report      jsonb NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX ledger_audits_audited_at ON ledger_audits (audited_at)")


def downgrade() -> None:
    op.execute("DROP TABLE ledger_audits")
