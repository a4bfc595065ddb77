"""The SQL that re-proves every ledger row in one statement (AUDIT_ROWS): each share
against its wager and rate, each pool's chain of amounts, each win's top-ups, the rates,
caps and reserve in force by the config history, the counts and leaf indexes.

Over 300 lines, nearly all SQL text: one statement, its checks built per pool by the
functions below. Splitting it would scatter one query over several files."""

from __future__ import annotations

from jackpot_grpc.domain.model import (
    GROUPS,
)


# Every ledger row re-proved, in one statement (window functions over the three ledgers):
# - each contribution share recomputed from its wager and the rate it records:
#   floor(wager × rate), or, when it records a ceiling, what fitted under it (the amount
#   the row left the pool at is where the share stopped);
# - the chain of each pool: ordered by ledger_seq (drawn under the pool locks, so per
#   pool it is the commit order), from the pool's chain start, every row's `*_after` must
#   be the previous one moved by this row. `drift` is how far a row's after is from the
#   sum of every move before it; a broken link is where the drift changes, so one bad
#   row is named once instead of every row after it;
# - each win's seed top-up against its seed-funding rows, and each win's own arithmetic;
# - each pool's counts against the pool row. (Its amount against the ledger is the sums'
#   check, audit_pools.)
# One row per problem: table, id (NULL for a pool row), pool, what is wrong.
#
# The chain runs per pool (one ordered scan each: narrower and much faster than one
# window partitioned by pool over every contribution unpivoted three times).
def _chain_of(g: str) -> str:
    return f"""running_{g} AS (
    SELECT s.*, (SELECT amount FROM ledger_chain_starts WHERE jackpot_group = '{g}')
        + sum(delta) OVER (ORDER BY ledger_seq) AS expected
    FROM (SELECT ledger_seq, 'contributions' AS tbl, id, {g}_amount AS delta, {g}_after AS after
          FROM contributions WHERE ledger_seq IS NOT NULL
          UNION ALL
          SELECT ledger_seq, 'wins', id, seed_top_up - amount, pool_after
          FROM wins WHERE ledger_seq IS NOT NULL AND jackpot_group = '{g}'
          UNION ALL  -- a top-up is part of its win's move; other fundings move on their own
          SELECT ledger_seq, 'seed_fundings', id, amount, NULL
          FROM seed_fundings
          WHERE ledger_seq IS NOT NULL AND win_id IS NULL AND jackpot_group = '{g}') s),
drifts_{g} AS (
    SELECT *, '{g}' AS grp, after - expected AS drift,
        lag(after - expected, 1, 0) OVER (ORDER BY ledger_seq) AS prev_drift
    FROM running_{g} WHERE after IS NOT NULL)"""


# Where each pool's chain ends: the last row's `after`, moved by the rows after it that
# record none (seed fundings of their own); no row: the chain's start.
def _chain_end_of(g: str) -> str:
    return f"""SELECT '{g}' AS grp, coalesce(
        (SELECT after + (SELECT coalesce(sum(delta), 0) FROM running_{g} later
                         WHERE later.ledger_seq > last.ledger_seq)
         FROM running_{g} last WHERE after IS NOT NULL ORDER BY ledger_seq DESC LIMIT 1),
        (SELECT max(expected) FILTER (WHERE ledger_seq = (SELECT max(ledger_seq)
                                                          FROM running_{g}))
         FROM running_{g}),
        (SELECT amount FROM ledger_chain_starts WHERE jackpot_group = '{g}')) AS chain_end"""


# Only the broken links leave the windows.
CHAIN_CTES = ",\n".join(_chain_of(g.value) for g in GROUPS) + (
    ",\ndrifts AS ("
    + " UNION ALL ".join(
        f"SELECT * FROM drifts_{g.value} WHERE drift <> prev_drift" for g in GROUPS
    )
    + "),\nchain_ends AS ("
    + " UNION ALL ".join(_chain_end_of(g.value) for g in GROUPS)
    + ")"
)


# A contribution's share of pool g against floor(wager × rate), or what fitted under its
# ceiling when it records one. From 0014 a row also records each pool's overflow: the share
# offered is floor(wager × rate) plus what other pools diverted into it (their overflow
# with this pool as its `_overflow_to`); what fits goes to the display, the rest overflows
# (and only past the ceiling); the reserve share is floor(wager × reserve rate).
def _share_check_of(g: str) -> str:
    into = " + ".join(
        f"CASE WHEN {p.value}_overflow_to = '{g}' THEN {p.value}_overflow ELSE 0 END"
        for p in GROUPS
        if p.value != g
    )
    return f"""SELECT 'contributions' AS tbl, id, '{g}' AS grp,
        format('share %%s, but floor(%%s × %%s) = %%s%%s', {g}_amount, wager_amount, {g}_rate,
               floor(wager_amount * {g}_rate),
               CASE WHEN {g}_cap IS NOT NULL THEN format(' capped at %%s', {g}_cap) ELSE '' END)
            AS problem
    FROM contributions
    WHERE {g}_rate IS NOT NULL AND {g}_overflow IS NULL AND CASE WHEN {g}_cap IS NULL
        THEN {g}_amount <> floor(wager_amount * {g}_rate)
        ELSE {g}_amount >= floor(wager_amount * {g}_rate) OR {g}_amount <> greatest(0,
             least(floor(wager_amount * {g}_rate), {g}_cap - ({g}_after - {g}_amount))) END
    UNION ALL
    SELECT 'contributions', id, '{g}',
        format('share %%s and overflow %%s, but %%s was offered (floor(%%s × %%s) and %%s'
               ' diverted in)%%s; reserve %%s, but floor(%%s × %%s) = %%s',
               {g}_amount, {g}_overflow, offered, wager_amount, {g}_rate, offered - own,
               CASE WHEN {g}_cap IS NOT NULL THEN format(', capped at %%s', {g}_cap) ELSE '' END,
               {g}_reserve, wager_amount, {g}_reserve_rate,
               floor(wager_amount * {g}_reserve_rate))
    FROM (SELECT *, floor(wager_amount * {g}_rate) AS own,
                 floor(wager_amount * {g}_rate) + {into} AS offered
          FROM contributions WHERE {g}_overflow IS NOT NULL) c
    WHERE {g}_amount + {g}_overflow <> offered
       OR {g}_reserve IS DISTINCT FROM floor(wager_amount * {g}_reserve_rate)
       OR CASE WHEN {g}_cap IS NULL THEN {g}_overflow <> 0
          ELSE {g}_overflow = 0 OR {g}_amount <> greatest(0,
               least(offered, {g}_cap - ({g}_after - {g}_amount))) END"""


SHARE_CHECKS = "\n    UNION ALL\n    ".join(_share_check_of(g.value) for g in GROUPS)


# A contribution's recorded rate of pool g against the rate in force by the config history:
# the latest rate change before it (both rows sequenced: the sequence is commit order);
# before any, the first change's `before`, or the pool's rate if none; 0 while the pool is
# suspended (pool_lifecycle: from a suspend to the next resume). Rate changes from
# before config changes were sequenced (migration 0010) cannot be placed: rows that only
# they could explain are not judged. The same for the reserve rate (`key` reserve_rate, the
# row's `{g}_reserve_rate`, from migration 0014): a suspended pool's is 0 too.
def _rate_check_of(g: str, key: str = "contribution_rate") -> str:
    column = f"{g}_rate" if key == "contribution_rate" else f"{g}_{key}"
    what = "rate" if key == "contribution_rate" else "reserve rate"
    changes = (
        f"config_audit WHERE jackpot_group = '{g}' AND after ? '{key}'"
        f" AND (before ->> '{key}')::numeric"
        f" IS DISTINCT FROM (after ->> '{key}')::numeric"
    )
    return f"""SELECT 'contributions' AS tbl, id, '{g}' AS grp,
        format('{what} %%s, but %%s was in force', recorded, in_force) AS problem
    FROM (SELECT id, kind, recorded, CASE WHEN bool_or(off) OVER (PARTITION BY off_no)
              THEN 0 ELSE coalesce(max(rate) OVER (PARTITION BY grp_no),
              CASE WHEN NOT EXISTS (SELECT 1 FROM {changes} AND ledger_seq IS NULL)
                   THEN coalesce((SELECT (before ->> '{key}')::numeric
                                  FROM {changes} ORDER BY ledger_seq LIMIT 1),
                                 (SELECT {key} FROM jackpots
                                  WHERE jackpot_group = '{g}')) END) END AS in_force
          FROM (SELECT *, count(rate) OVER (ORDER BY seq) AS grp_no,
                       count(off) OVER (ORDER BY seq) AS off_no
                FROM (SELECT 'c' AS kind, id, ledger_seq AS seq, NULL::numeric AS rate,
                             {column} AS recorded, NULL::boolean AS off
                      FROM contributions WHERE ledger_seq IS NOT NULL AND {column} IS NOT NULL
                      UNION ALL
                      SELECT 'a', id, ledger_seq, (after ->> '{key}')::numeric,
                             NULL, NULL
                      FROM {changes} AND ledger_seq IS NOT NULL
                      UNION ALL  -- a suspended pool's rate is 0 until it is resumed
                      SELECT 's', id, ledger_seq, NULL, NULL, action = 'suspend'
                      FROM pool_lifecycle WHERE jackpot_group = '{g}'
                          AND action IN ('suspend', 'resume')) track) grouped) judged
    WHERE kind = 'c' AND recorded <> in_force"""


RATE_CHECKS = "\n    UNION ALL\n    ".join(
    _rate_check_of(g.value, key) for key in ("contribution_rate", "reserve_rate") for g in GROUPS
)


# A reset is paid from the reserve first: each win's reserve top-up is the least of what
# the reset needed and what pool g's reserve held just before it (its reserve shares and
# reserve top-ups in ledger order, from what it held at the start: 0, or an incremental
# audit's base; rows from before 0014 hold no reserve).
def _reserve_first_of(g: str) -> str:
    return f"""SELECT 'wins' AS tbl, id, '{g}' AS grp,
        format('reserve top-up %%s, but the reserve held %%s and the reset needed %%s',
               reserve_top_up, held, seed_top_up) AS problem
    FROM (SELECT *, %(reserve_start_{g})s::bigint + sum(delta) OVER (ORDER BY ledger_seq)
                 - delta AS held
          FROM (SELECT ledger_seq, 'c' AS kind, id, {g}_reserve AS delta,
                       NULL::bigint AS seed_top_up, NULL::bigint AS reserve_top_up
                FROM contributions WHERE ledger_seq IS NOT NULL AND {g}_reserve > 0
                UNION ALL
                SELECT ledger_seq, 'w', id, -coalesce(reserve_top_up, 0), seed_top_up,
                       reserve_top_up
                FROM wins WHERE ledger_seq IS NOT NULL AND jackpot_group = '{g}') moves) chain
    WHERE kind = 'w' AND reserve_top_up IS NOT NULL
      AND reserve_top_up <> least(held, seed_top_up)"""


RESERVE_CHECKS = "\n    UNION ALL\n    ".join(_reserve_first_of(g.value) for g in GROUPS)


# A share's ceiling is the pool's max_amount, or (no max, or a total near int64's end) the
# headroom below int64: a recorded cap below 2^62 must be the max_amount in force by the
# config history (placed like the rates above; a change may remove the max: then none).
INT64_HEADROOM_FLOOR = 1 << 62


def _cap_check_of(g: str) -> str:
    changes = (
        f"config_audit WHERE jackpot_group = '{g}' AND after ? 'max_amount'"
        " AND (before ->> 'max_amount')::bigint"
        " IS DISTINCT FROM (after ->> 'max_amount')::bigint"
    )
    return f"""SELECT 'contributions' AS tbl, id, '{g}' AS grp,
        format('cap %%s, but the max in force was %%s', recorded,
               coalesce(in_force::text, 'none')) AS problem
    FROM (SELECT id, kind, recorded, CASE WHEN grp_no > 0
                THEN max(val) OVER (PARTITION BY grp_no)
                ELSE coalesce((SELECT (before ->> 'max_amount')::bigint
                               FROM {changes} ORDER BY ledger_seq LIMIT 1),
                              (SELECT max_amount FROM jackpots WHERE jackpot_group = '{g}'))
                END AS in_force
          FROM (SELECT *, sum(is_change) OVER (ORDER BY seq) AS grp_no
                FROM (SELECT 'c' AS kind, id, ledger_seq AS seq, 0 AS is_change,
                             NULL::bigint AS val, {g}_cap AS recorded
                      FROM contributions WHERE ledger_seq IS NOT NULL AND {g}_cap IS NOT NULL
                      UNION ALL
                      SELECT 'a', id, ledger_seq, 1, (after ->> 'max_amount')::bigint, NULL
                      FROM {changes} AND ledger_seq IS NOT NULL) track) grouped) judged
    WHERE kind = 'c' AND recorded < {INT64_HEADROOM_FLOOR}
      AND recorded IS DISTINCT FROM in_force
      AND NOT EXISTS (SELECT 1 FROM {changes} AND ledger_seq IS NULL)"""


CAP_CHECKS = "\n    UNION ALL\n    ".join(_cap_check_of(g.value) for g in GROUPS)
AUDIT_ROWS = f"""WITH shares AS (
    {SHARE_CHECKS}),
rates AS (
    {RATE_CHECKS}),
reserve_first AS (
    {RESERVE_CHECKS}),
caps AS (
    {CAP_CHECKS}),
{CHAIN_CTES},
pool_ends AS (  -- each pool's current amount is where its chain ends
    SELECT 'jackpots' AS tbl, NULL::bigint AS id, j.jackpot_group AS grp,
        format('amount %%s, but its chain of ledger rows ends at %%s', j.current_amount,
               e.chain_end) AS problem
    FROM jackpots j JOIN chain_ends e ON e.grp = j.jackpot_group
    WHERE j.current_amount <> e.chain_end),
chain AS (
    SELECT tbl, id, grp,
        format('after %%s, but the amount before it was %%s and it moves %%s', after,
               expected + prev_drift - delta, delta) AS problem
    FROM drifts WHERE drift <> prev_drift),
funding AS (  -- a reset's rows: one per source (the reserve, the operator)
    SELECT win_id, count(*) AS n, count(DISTINCT coalesce(source, 'operator')) AS sources,
        sum(amount) AS funded, sum(amount) FILTER (WHERE source = 'reserve') AS from_reserve
    FROM seed_fundings WHERE win_id IS NOT NULL GROUP BY win_id),
top_ups AS (
    SELECT 'wins' AS tbl, w.id, w.jackpot_group AS grp,
        format('seed top-up %%s, but %%s', w.seed_top_up,
               CASE WHEN f.win_id IS NULL THEN 'no seed-funding row'
                    ELSE format('%%s seed-funding row(s) of %%s', f.n, f.funded) END)
            AS problem
    FROM wins w LEFT JOIN funding f ON f.win_id = w.id
    WHERE w.seed_top_up <> coalesce(f.funded, 0) OR f.n > f.sources
    UNION ALL
    SELECT 'wins', w.id, w.jackpot_group,
        format('reserve top-up %%s, but %%s of its seed funding came from the reserve',
               w.reserve_top_up, coalesce(f.from_reserve, 0))
    FROM wins w LEFT JOIN funding f ON f.win_id = w.id
    WHERE coalesce(w.reserve_top_up, 0) <> coalesce(f.from_reserve, 0)
    UNION ALL
    SELECT 'seed_fundings', s.id, s.jackpot_group,
        format('funds win %%s, a %%s win', s.win_id, w.jackpot_group)
    FROM seed_fundings s JOIN wins w ON w.id = s.win_id
    WHERE s.jackpot_group <> w.jackpot_group
    UNION ALL
    SELECT 'wins', id, jackpot_group,
        format('pays %%s from %%s with top-up %%s, but records %%s after', amount,
               pool_before, seed_top_up, pool_after)
    FROM wins WHERE pool_after <> pool_before - amount + seed_top_up),
counted AS (
    SELECT count(*) FILTER (WHERE minor_amount > 0) AS minor,
           count(*) FILTER (WHERE major_amount > 0) AS major,
           count(*) FILTER (WHERE mega_amount > 0) AS mega
    FROM contributions),
counts AS (
    SELECT 'jackpots' AS tbl, NULL::bigint AS id, j.jackpot_group AS grp,
        format('records %%s contributions and %%s wins; the ledger has %%s and %%s',
               j.contribution_count, j.win_count, cc.n, coalesce(wc.n, 0) + bw.n) AS problem
    FROM jackpots j
    JOIN (SELECT 'minor' AS grp, minor + %(base_c_minor)s::bigint AS n FROM counted
          UNION ALL SELECT 'major', major + %(base_c_major)s::bigint FROM counted
          UNION ALL SELECT 'mega', mega + %(base_c_mega)s::bigint FROM counted) cc
        ON cc.grp = j.jackpot_group
    JOIN (VALUES ('minor', %(base_w_minor)s::bigint), ('major', %(base_w_major)s::bigint),
                 ('mega', %(base_w_mega)s::bigint)) bw(grp, n) ON bw.grp = j.jackpot_group
    LEFT JOIN (SELECT jackpot_group, count(*) AS n FROM wins GROUP BY jackpot_group) wc
        ON wc.jackpot_group = j.jackpot_group
    WHERE j.contribution_count <> cc.n OR j.win_count <> coalesce(wc.n, 0) + bw.n),
win_amounts AS (  -- a win pays what was asked, or (asking nothing) the whole pool
    SELECT 'wins' AS tbl, id, jackpot_group AS grp,
        CASE WHEN requested_amount IS NOT NULL
             THEN format('pays %%s, but %%s was asked', amount, requested_amount)
             ELSE format('a whole-pool win pays %%s of a pool of %%s', amount, pool_before)
        END AS problem
    FROM wins WHERE amount <> coalesce(requested_amount, pool_before)),
seeds_in_force AS (  -- a win's pool's seed when it won, by the config history
    SELECT w.id, w.jackpot_group, w.seed_top_up, w.pool_before - w.amount AS left_over,
        coalesce(
            (SELECT (a.after ->> 'seed_amount')::bigint FROM config_audit a
             WHERE a.jackpot_group = w.jackpot_group AND CASE
                 WHEN a.ledger_seq IS NOT NULL AND w.ledger_seq IS NOT NULL
                 THEN a.ledger_seq < w.ledger_seq ELSE a.changed_at <= w.created_at END
             ORDER BY a.id DESC LIMIT 1),
            (SELECT (a.before ->> 'seed_amount')::bigint FROM config_audit a
             WHERE a.jackpot_group = w.jackpot_group ORDER BY a.id LIMIT 1),
            (SELECT j.seed_amount FROM jackpots j WHERE j.jackpot_group = w.jackpot_group))
            AS seed
    FROM wins w),
seed_top_ups AS (  -- a top-up is exactly what brings the pool back to that seed
    SELECT 'wins' AS tbl, id, jackpot_group AS grp,
        format('seed top-up %%s, but the seed in force (%%s) needs %%s', seed_top_up, seed,
               greatest(0, seed - left_over)) AS problem
    FROM seeds_in_force WHERE seed_top_up <> greatest(0, seed - left_over)),
unsequenced AS (  -- every row since the log began has a leaf index (0013) or is a leaf
    SELECT t.tbl, t.id, t.grp, 'no leaf index and no leaf: written past the ledger' AS problem
    FROM (SELECT 'contributions' AS tbl, id, 'minor' AS grp, leaf_index
          FROM public.contributions WHERE id > %(old_contributions)s::bigint
          UNION ALL SELECT 'wins', id, jackpot_group, leaf_index
          FROM public.wins WHERE id > %(old_wins)s::bigint
          UNION ALL SELECT 'seed_fundings', id, jackpot_group, leaf_index
          FROM public.seed_fundings WHERE id > %(old_seed_fundings)s::bigint
          UNION ALL SELECT 'config_audit', id, jackpot_group, leaf_index
          FROM public.config_audit WHERE id > %(old_config_audit)s::bigint
          UNION ALL SELECT 'pool_lifecycle', id, jackpot_group, leaf_index
          FROM public.pool_lifecycle WHERE id > %(old_pool_lifecycle)s::bigint) t
    WHERE t.leaf_index IS NULL AND NOT EXISTS (
        SELECT 1 FROM ledger_leaves l WHERE l.ledger_table = t.tbl AND l.row_id = t.id
        AND l.leaf_index < ledger_receipts_from())),  -- rows from before receipts (0017)
problems AS (
    SELECT * FROM shares UNION ALL SELECT * FROM chain UNION ALL SELECT * FROM top_ups
    UNION ALL SELECT * FROM counts UNION ALL SELECT * FROM win_amounts
    UNION ALL SELECT * FROM seed_top_ups UNION ALL SELECT * FROM unsequenced
    UNION ALL SELECT * FROM rates UNION ALL SELECT * FROM reserve_first
    UNION ALL SELECT * FROM caps UNION ALL SELECT * FROM pool_ends)
SELECT tbl, id, grp, problem, count(*) OVER () AS total
FROM problems ORDER BY tbl, id NULLS FIRST, grp LIMIT %(limit)s"""
