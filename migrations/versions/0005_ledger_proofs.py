"""Ledger proofs: every row carries what `jackpot audit` needs to recompute it.

- `contributions.{minor,major,mega}_rate`: the contribution rate each pool applied, so the
  audit recomputes floor(wager × rate). NULL marks a legacy row whose rate is not known.
- `contributions.{minor,major,mega}_cap`: the ceiling a pool's share was cut to when the
  whole share did not fit (NULL when it fitted), so a capped share is re-proved too: it
  is what fitted under that ceiling.
- `ledger_seq` on contributions, wins and seed fundings: one sequence shared by the three
  ledgers. Writers draw it while holding the pool locks, so per pool its order is the
  commit order, and the audit walks the chain of `*_after` amounts in it. Rows written
  before this revision keep NULL: their order across the ledgers cannot be known (ids are
  per table, and created_at is the transaction's start, not its commit).
- `ledger_chain_starts`: each pool's amount when this revision ran, after every legacy
  row: the chain of sequenced rows starts from it. (On a fresh install, whose ledger holds
  only the initial seeds, the seeds are sequenced and the chain starts from 0.)

Existing contributions are brought along: where a pool's rate never changed in
config_audit, every row's rate is the pool's current rate (and a share below
floor(wager × rate) was capped, at the amount it left the pool at); where it changed,
the old rows' rate for that pool stays NULL (legacy), and the audit says how many it
could not recompute.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-10
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

GROUPS = ("minor", "major", "mega")


def upgrade() -> None:
    # Writers must not move a pool between the chain's start and the first sequenced row.
    op.execute("LOCK TABLE jackpots IN EXCLUSIVE MODE")
    op.execute("CREATE SEQUENCE ledger_seq")
    for table in ("contributions", "wins", "seed_fundings"):
        # Added without a default, so existing rows stay NULL (legacy order); new rows draw.
        op.execute(f"ALTER TABLE {table} ADD COLUMN ledger_seq bigint")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN ledger_seq SET DEFAULT nextval('ledger_seq')")
        op.execute(f"CREATE UNIQUE INDEX {table}_ledger_seq ON {table} (ledger_seq)")
    for g in GROUPS:
        op.execute(
            f"""ALTER TABLE contributions
                ADD COLUMN {g}_rate numeric(12, 10) CHECK ({g}_rate >= 0 AND {g}_rate <= 1),
                ADD COLUMN {g}_cap bigint CHECK ({g}_cap >= 0)"""
        )
    op.execute(
        """
        CREATE TABLE ledger_chain_starts (
            jackpot_group text PRIMARY KEY REFERENCES jackpots (jackpot_group),
            amount        bigint NOT NULL
        )
        """
    )
    # A ledger of nothing but seed fundings (a fresh install: the initial seeds) has one
    # order, by id: sequence it and start the chain from 0, so every row is proved.
    only_seeds = "NOT EXISTS (SELECT 1 FROM contributions) AND NOT EXISTS (SELECT 1 FROM wins)"
    op.execute(
        "INSERT INTO ledger_chain_starts (jackpot_group, amount)"
        f" SELECT jackpot_group, CASE WHEN {only_seeds} THEN 0 ELSE current_amount END"
        " FROM jackpots"
    )
    op.execute(
        f"""UPDATE seed_fundings s SET ledger_seq = o.seq
            FROM (SELECT id, nextval('ledger_seq') AS seq
                  FROM (SELECT id FROM seed_fundings ORDER BY id) ordered) o
            WHERE s.id = o.id AND {only_seeds}"""
    )
    for g in GROUPS:
        # A rate is known for old rows only if config_audit never recorded a change to it.
        op.execute(
            f"""UPDATE contributions c SET
                    {g}_rate = j.contribution_rate,
                    {g}_cap = CASE WHEN c.{g}_amount < floor(c.wager_amount * j.contribution_rate)
                                   THEN c.{g}_after END
                FROM jackpots j
                WHERE j.jackpot_group = '{g}'
                  AND NOT EXISTS (
                      SELECT 1 FROM config_audit a
                      WHERE a.jackpot_group = '{g}'
                        AND (a.before ->> 'contribution_rate')::numeric
                            IS DISTINCT FROM (a.after ->> 'contribution_rate')::numeric)"""
        )


def downgrade() -> None:
    op.execute("DROP TABLE ledger_chain_starts")
    for g in GROUPS:
        op.execute(f"ALTER TABLE contributions DROP COLUMN {g}_rate, DROP COLUMN {g}_cap")
    for table in ("contributions", "wins", "seed_fundings"):
        op.execute(f"ALTER TABLE {table} DROP COLUMN ledger_seq")
    op.execute("DROP SEQUENCE ledger_seq")
