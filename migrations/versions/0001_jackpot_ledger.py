"""Pools, contribution and win ledgers, seed funding, config audit; default pools.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE jackpots (
            jackpot_group       text PRIMARY KEY CHECK (jackpot_group IN ('minor', 'major', 'mega')),
            -- Every writer locks pool rows in this order, so writers never deadlock.
            lock_order          smallint NOT NULL UNIQUE,
            current_amount      bigint NOT NULL CHECK (current_amount >= 0),
            seed_amount         bigint NOT NULL CHECK (seed_amount > 0),
            max_amount          bigint CHECK (max_amount IS NULL OR max_amount > seed_amount),
            contribution_rate   numeric(12, 10) NOT NULL
                                CHECK (contribution_rate >= 0 AND contribution_rate <= 1),
            total_contributions bigint NOT NULL DEFAULT 0,
            total_wins          bigint NOT NULL DEFAULT 0,
            total_seed_funding  bigint NOT NULL DEFAULT 0,
            contribution_count  bigint NOT NULL DEFAULT 0,
            win_count           bigint NOT NULL DEFAULT 0,
            last_won_amount     bigint,
            last_won_at         timestamptz,
            last_won_by_user_id uuid,
            -- Bumped by every change to the row (contributions, wins, config).
            version             bigint NOT NULL DEFAULT 1,
            -- Bumped by config changes only: UpdateConfig.expected_version compares with it.
            config_version      bigint NOT NULL DEFAULT 1,
            created_at          timestamptz NOT NULL DEFAULT now(),
            updated_at          timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE contributions (
            id              bigserial PRIMARY KEY,
            idempotency_key text,
            game_id         text NOT NULL,
            wager_amount    bigint NOT NULL CHECK (wager_amount > 0),
            minor_amount    bigint NOT NULL CHECK (minor_amount >= 0),
            major_amount    bigint NOT NULL CHECK (major_amount >= 0),
            mega_amount     bigint NOT NULL CHECK (mega_amount >= 0),
            minor_after     bigint NOT NULL,
            major_after     bigint NOT NULL,
            mega_after      bigint NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX contributions_idempotency_key ON contributions (idempotency_key)"
        " WHERE idempotency_key IS NOT NULL"
    )
    op.execute("CREATE INDEX contributions_created_at ON contributions USING brin (created_at)")
    op.execute(
        """
        CREATE TABLE wins (
            id               bigserial PRIMARY KEY,
            idempotency_key  text,
            jackpot_group    text NOT NULL REFERENCES jackpots (jackpot_group),
            game_id          text NOT NULL,
            user_id          uuid NOT NULL,
            requested_amount bigint,
            amount           bigint NOT NULL CHECK (amount > 0),
            pool_before      bigint NOT NULL,
            seed_top_up      bigint NOT NULL CHECK (seed_top_up >= 0),
            pool_after       bigint NOT NULL,
            created_at       timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX wins_idempotency_key ON wins (idempotency_key)"
        " WHERE idempotency_key IS NOT NULL"
    )
    op.execute("CREATE INDEX wins_group_created_at ON wins (jackpot_group, created_at)")
    op.execute(
        """
        CREATE TABLE seed_fundings (
            id            bigserial PRIMARY KEY,
            jackpot_group text NOT NULL REFERENCES jackpots (jackpot_group),
            amount        bigint NOT NULL CHECK (amount > 0),
            reason        text NOT NULL,
            win_id        bigint REFERENCES wins (id),
            created_at    timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX seed_fundings_group ON seed_fundings (jackpot_group)")
    op.execute(
        """
        CREATE TABLE config_audit (
            id            bigserial PRIMARY KEY,
            jackpot_group text NOT NULL REFERENCES jackpots (jackpot_group),
            actor         text NOT NULL,
            reason        text NOT NULL DEFAULT '',
            before        jsonb NOT NULL,
            after         jsonb NOT NULL,
            changed_at    timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX config_audit_group_changed_at ON config_audit (jackpot_group, changed_at)")
    # Default pools: each starts at its seed, and that seed is the first ledger entry.
    op.execute(
        """
        INSERT INTO jackpots (jackpot_group, lock_order, current_amount, seed_amount, max_amount,
                              contribution_rate, total_seed_funding)
        VALUES ('minor', 0, 10000, 10000, 100000, 0.0050000000, 10000),
               ('major', 1, 100000, 100000, 1000000, 0.0030000000, 100000),
               ('mega', 2, 1000000, 1000000, NULL, 0.0020000000, 1000000)
        """
    )
    op.execute(
        """
        INSERT INTO seed_fundings (jackpot_group, amount, reason)
        SELECT jackpot_group, seed_amount, 'initial seed' FROM jackpots
        """
    )


def downgrade() -> None:
    for table in ("config_audit", "seed_fundings", "wins", "contributions", "jackpots"):
        op.execute(f"DROP TABLE {table}")
