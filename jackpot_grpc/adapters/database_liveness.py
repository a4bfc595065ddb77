"""Is the database there and which one is it: the readiness ping (answers and takes
writes), the heartbeat write, and the cluster's identity (a failover changes it)."""

from __future__ import annotations

from dataclasses import dataclass

from jackpot_grpc.adapters.pool_store import Conn
from jackpot_grpc.domain.errors import Unavailable


async def ping(conn: Conn) -> None:
    """The database answers and can take writes: a standby or a read-only database
    answers SELECT 1 but refuses every Contribute, so it is not ready."""
    cursor = await conn.execute(
        "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"
    )
    row = await cursor.fetchone()
    if row is None or row[0]:
        raise Unavailable("database answers but cannot take writes (read-only or in recovery)")


# The readiness probe's write (migration 0011): this process's heartbeat row, and the rows
# of processes silent for a day pruned on the way. It commits like any write, so it waits
# wherever a synchronous standby holds commits.
HEARTBEAT = """WITH pruned AS (
    DELETE FROM write_heartbeat WHERE beat_at < now() - interval '1 day' AND process <> %(p)s)
INSERT INTO write_heartbeat (process) VALUES (%(p)s)
ON CONFLICT (process) DO UPDATE SET beat_at = now()"""


async def heartbeat(conn: Conn, process: str) -> None:
    """One write, committed (the connection is in autocommit)."""
    await conn.execute(HEARTBEAT, {"p": process})


@dataclass(frozen=True)
class ClusterIdentity:
    """Which database history a connection reached: the cluster's system identifier
    (initdb's; a streaming standby shares its primary's) and the timeline (a promotion
    starts a new one). A change after a reconnect is a failover (or a restore)."""

    system_identifier: int
    timeline: int


# pg_control_system() and pg_control_checkpoint() are executable by any role (no
# superuser, no pg_monitor). The checkpoint's timeline lags a promotion until the first
# checkpoint after it; the current WAL file's name carries the timeline at once (its first
# 8 hex digits), on a primary.
IDENTITY = """SELECT s.system_identifier, c.timeline_id,
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END
FROM pg_control_system() s, pg_control_checkpoint() c"""


async def cluster_identity(conn: Conn) -> ClusterIdentity:
    cursor = await conn.execute(IDENTITY)
    row = await cursor.fetchone()
    assert row is not None
    system_identifier, checkpoint_timeline, wal_file = row
    timeline = int(wal_file[:8], 16) if wal_file else int(checkpoint_timeline)
    return ClusterIdentity(int(system_identifier), timeline)
