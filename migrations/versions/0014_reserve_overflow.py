"""Reserve and overflow meters (docs/ARCHITECTURE.md, "The meters and their identity").

- `jackpots`: the config a pool gains (`reserve_rate`, `overflow_policy`,
  `overflow_target`) and its new meters: `reserve_amount`, `overflow_amount`,
  `total_contributed` (everything wagers gave the pool: display share, reserve share and the
  part that overflowed), `total_diverted_in` / `total_diverted_out` (overflow moved between
  pools) and `seed_from_reserve` (the part of `total_seed_funding` the reserve paid).
  Existing pools: reserve rate 0, ACCUMULATE, every new meter 0 except `total_contributed`,
  which starts at `total_contributions` (before this revision nothing overflowed or was
  reserved: a share past the cap was not taken).
- `contributions`: per pool, the reserve rate applied, the reserve share, the overflow
  (what of the pool's display share and the overflow diverted into it did not fit) and
  where that overflow went (the pool's own name: its overflow meter; another pool: diverted
  there). NULL on rows written before this revision.
- `wins.reserve_top_up`: the part of `seed_top_up` paid from the reserve (NULL before).
- `seed_fundings.source`: `operator` or `reserve` (NULL before: the operator).
- The deferred rate-sum trigger of 0004 sums display and reserve rates together, and fires
  when either is raised.

The ledger columns are added without defaults, so no existing row changes (the leaves of
existing rows keep their bytes: docs/LEDGER.md, "Extension fields").

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-13
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

GROUPS = ("minor", "major", "mega")
GROUP_CHECK = "IN ('minor', 'major', 'mega')"


def upgrade() -> None:
    op.execute(
        f"""
        ALTER TABLE jackpots
            ADD COLUMN reserve_rate numeric(12, 10) NOT NULL DEFAULT 0
                CHECK (reserve_rate >= 0 AND reserve_rate <= 1),
            ADD COLUMN overflow_policy text NOT NULL DEFAULT 'accumulate'
                CHECK (overflow_policy IN ('accumulate', 'divert')),
            ADD COLUMN overflow_target text CHECK (overflow_target {GROUP_CHECK}),
            ADD COLUMN reserve_amount bigint NOT NULL DEFAULT 0 CHECK (reserve_amount >= 0),
            ADD COLUMN overflow_amount bigint NOT NULL DEFAULT 0 CHECK (overflow_amount >= 0),
            ADD COLUMN total_contributed bigint NOT NULL DEFAULT 0,
            ADD COLUMN total_diverted_in bigint NOT NULL DEFAULT 0,
            ADD COLUMN total_diverted_out bigint NOT NULL DEFAULT 0,
            ADD COLUMN seed_from_reserve bigint NOT NULL DEFAULT 0,
            ADD CONSTRAINT jackpots_overflow_target CHECK (
                (overflow_policy = 'divert') = (overflow_target IS NOT NULL)
                AND overflow_target IS DISTINCT FROM jackpot_group)
        """
    )
    op.execute("UPDATE jackpots SET total_contributed = total_contributions")
    columns = ",\n".join(
        f"ADD COLUMN {g}_reserve_rate numeric(12, 10),"
        f" ADD COLUMN {g}_reserve bigint CHECK ({g}_reserve >= 0),"
        f" ADD COLUMN {g}_overflow bigint CHECK ({g}_overflow >= 0),"
        f" ADD COLUMN {g}_overflow_to text CHECK ({g}_overflow_to {GROUP_CHECK})"
        for g in GROUPS
    )
    op.execute(f"ALTER TABLE contributions {columns}")
    op.execute(
        "ALTER TABLE wins ADD COLUMN reserve_top_up bigint"
        " CHECK (reserve_top_up >= 0 AND reserve_top_up <= seed_top_up)"
    )
    op.execute(
        "ALTER TABLE seed_fundings ADD COLUMN source text"
        " CHECK (source IN ('operator', 'reserve'))"
    )
    # The rate-sum trigger (0004) counts display and reserve rates together.
    op.execute(RATES_SUM.format(total="contribution_rate + reserve_rate", raised=RAISED_0014))
    op.execute("DROP TRIGGER jackpots_rates_sum_at_most_one ON jackpots")
    op.execute(TRIGGER.format(columns="contribution_rate, reserve_rate"))


RATES_SUM = """
    CREATE OR REPLACE FUNCTION jackpot_rates_sum_at_most_one() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        total numeric;
    BEGIN
        -- A lower rate is always allowed: books set wrong before this revision can
        -- be brought back under the bound one pool at a time.
        IF TG_OP = 'UPDATE' AND NOT ({raised}) THEN
            RETURN NULL;
        END IF;
        SELECT sum({total}) INTO total FROM jackpots;
        IF total > 1 THEN
            RAISE EXCEPTION 'contribution rates sum to %, above 1', total
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NULL;
    END
    $$
"""
RAISED_0004 = "NEW.contribution_rate > OLD.contribution_rate"
RAISED_0014 = RAISED_0004 + " OR NEW.reserve_rate > OLD.reserve_rate"
TRIGGER = """
    CREATE CONSTRAINT TRIGGER jackpots_rates_sum_at_most_one
    AFTER INSERT OR UPDATE OF {columns} ON jackpots
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION jackpot_rates_sum_at_most_one()
"""


def downgrade() -> None:
    op.execute("DROP TRIGGER jackpots_rates_sum_at_most_one ON jackpots")
    op.execute(RATES_SUM.format(total="contribution_rate", raised=RAISED_0004))
    op.execute(TRIGGER.format(columns="contribution_rate"))
    op.execute("ALTER TABLE seed_fundings DROP COLUMN source")
    op.execute("ALTER TABLE wins DROP COLUMN reserve_top_up")
    columns = ", ".join(
        f"DROP COLUMN {g}_{c}" for g in GROUPS for c in ("reserve_rate", "reserve", "overflow", "overflow_to")
    )
    op.execute(f"ALTER TABLE contributions {columns}")
    op.execute(
        "ALTER TABLE jackpots DROP CONSTRAINT jackpots_overflow_target,"
        " DROP COLUMN reserve_rate, DROP COLUMN overflow_policy, DROP COLUMN overflow_target,"
        " DROP COLUMN reserve_amount, DROP COLUMN overflow_amount,"
        " DROP COLUMN total_contributed, DROP COLUMN total_diverted_in,"
        " DROP COLUMN total_diverted_out, DROP COLUMN seed_from_reserve"
    )
