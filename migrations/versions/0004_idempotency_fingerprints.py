"""Idempotency fingerprints on the ledgers, and the rates' sum bounded in the database.

Each keyed contribution and win carries the SHA-256 fingerprint of the request its key was
first used for (jackpot_grpc.domain.idempotency): a later request with the same key and a
different fingerprint is refused (IDEMPOTENCY_KEY_REUSED) instead of replayed. Rows written
before this revision get theirs computed here, in SQL, from the same canonical text the
code hashes, so every keyed row has one (no NULL that would match anything).

A deferred constraint trigger refuses a commit that leaves the three contribution rates
summing above 1 (money from nowhere) after a rate was raised (lowering one is always
allowed, so books set wrong before this revision can be repaired pool by pool). It fires only when contribution_rate is written, so
the contribution path (which never sets it) pays nothing for it. The service checks the
operator's lower bound (JACKPOT_MAX_RATE_SUM) itself, under the pool locks.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CONTRIBUTION_TEXT = "'contribute' || E'\\n' || game_id || E'\\n' || wager_amount::text"
WIN_TEXT = (
    "'win' || E'\\n' || jackpot_group || E'\\n' || game_id || E'\\n' || user_id::text"
    " || E'\\n' || coalesce(requested_amount::text, '')"
)


def upgrade() -> None:
    for table, text in (("contributions", CONTRIBUTION_TEXT), ("wins", WIN_TEXT)):
        op.execute(f"ALTER TABLE {table} ADD COLUMN fingerprint bytea")
        op.execute(
            f"UPDATE {table} SET fingerprint = sha256(convert_to({text}, 'UTF8'))"
            " WHERE idempotency_key IS NOT NULL"
        )
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {table}_key_has_fingerprint"
            " CHECK ((idempotency_key IS NULL) = (fingerprint IS NULL))"
        )
    op.execute(
        """
        CREATE FUNCTION jackpot_rates_sum_at_most_one() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            total numeric;
        BEGIN
            -- A lower rate is always allowed: books set wrong before this revision can
            -- be brought back under the bound one pool at a time.
            IF TG_OP = 'UPDATE' AND NEW.contribution_rate <= OLD.contribution_rate THEN
                RETURN NULL;
            END IF;
            SELECT sum(contribution_rate) INTO total FROM jackpots;
            IF total > 1 THEN
                RAISE EXCEPTION 'contribution rates sum to %, above 1', total
                    USING ERRCODE = 'check_violation';
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE CONSTRAINT TRIGGER jackpots_rates_sum_at_most_one
        AFTER INSERT OR UPDATE OF contribution_rate ON jackpots
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION jackpot_rates_sum_at_most_one()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER jackpots_rates_sum_at_most_one ON jackpots")
    op.execute("DROP FUNCTION jackpot_rates_sum_at_most_one()")
    for table in ("contributions", "wins"):
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_key_has_fingerprint")
        op.execute(f"ALTER TABLE {table} DROP COLUMN fingerprint")
