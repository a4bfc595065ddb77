"""The SQL of the tamper-evident ledger: leaves (`ledger_leaves`, 0010) and ledger rows.

Every ledger row takes its leaf index in the transaction that writes it (`leaf_index`,
claimed from `ledger_head`, migration 0013: see `claim_leaves`), so a write answers with
its index. The leaf hashes are computed away from the money path, by whoever signs a
checkpoint: the rows whose index is at or above the log's size, read in one snapshot, are
the next leaves (commits are serialised by the head row's lock, so a snapshot sees a
gap-free prefix of the indexes). Nearly everything here is synchronous psycopg: the CLI
calls it directly, the migration through alembic's connection, the server from a worker
thread; only the audit's proof reads (proof_leaf, leaf_hash_range) are async.

Over 400 lines because it is all of the ledger's SQL in one place: the leaf claims, the
leaf reads, the signer's connection and snapshot, and the audit's reads must agree on the
same tables, order and leaf encoding, so they are read together rather than split apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from jackpot_grpc.adapters import advisory_locks
from jackpot_grpc.adapters.commit_bound import (
    SYNC_REP_CANCELLED,
    CommitWatchdog,
    commit_warnings,
    unknown,
)
from jackpot_grpc.adapters.database_liveness import IDENTITY, ClusterIdentity
from jackpot_grpc.ledger import merkle
from jackpot_grpc.ledger.leaf import EXTENSION_FROM, SCHEMAS, VERSION, Field, FieldKind
from jackpot_grpc.ledger.rows import EVENT_OF_TABLE, leaf_of

CHECKPOINT_LOCK_KEY: Final = advisory_locks.LEDGER_CHECKPOINT
# Ledger tables in the order rows of one instant are put, when no sequence orders them.
TABLES: Final = ("seed_fundings", "contributions", "wins", "config_audit", "pool_lifecycle")
_TIME = {"config_audit": "changed_at", "pool_lifecycle": "changed_at"}


# libpq waits for an answer to a connection attempt for ever unless told otherwise: a host
# that drops packets would hold the signer's (or an audit's) thread. The server gives its
# own URL (DB_CONNECT_TIMEOUT, per host: database.ledger_conninfo); this applies where the
# URL has none (the operator commands).
CONNECT_TIMEOUT: Final = 5


def connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection for the ledger's work (no statement timeout: a first
    checkpoint of a large ledger hashes every row in one statement)."""
    if "connect_timeout" in conninfo_to_dict(url):
        return psycopg.connect(url, autocommit=True)
    return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)


def liveness_bound(url: str) -> float:
    """How long a kept connection's liveness check may take: the URL's connect timeout
    (DB_CONNECT_TIMEOUT for the server's), else CONNECT_TIMEOUT."""
    given = conninfo_to_dict(url).get("connect_timeout")
    return float(given) if given and float(given) > 0 else CONNECT_TIMEOUT


class SignerConnection:
    """The checkpoint signer's connection, kept from one turn to the next: a connection
    costs PostgreSQL about 3 ms of CPU (a backend, authentication, catalog caches), more
    than a turn's leaves at the usual rates (BENCHMARKS.md). It is dropped whenever a turn
    fails (the database away, a failover, the history changed under the signer: the next
    turn connects anew, and the URL, multi-host with target_session_attrs=read-write,
    reaches whichever server is the primary then), and when a round trip before the turn
    finds it dead (a server restarted or gone since the last turn)."""

    def __init__(self) -> None:
        self._url: str | None = None
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def backend_pid(self) -> int | None:
        """The kept connection's server process (None: none kept)."""
        return None if self._conn is None or self._conn.closed else self._conn.info.backend_pid

    def close(self) -> None:
        conn, self._conn, self._url = self._conn, None, None
        if conn is not None:
            conn.close()

    def _alive(self, url: str) -> psycopg.Connection[Any] | None:
        conn = self._conn
        if conn is None or conn.closed or conn.broken or self._url != url:
            return None
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return None
        # Bounded like a new connection would be: a host that stopped answering (a
        # partition, a frozen machine) must cost the turn a connect timeout, not TCP's
        # quarter of an hour, before the URL's next host is tried.
        watchdog = CommitWatchdog()
        watchdog.arm(conn.pgconn.socket, liveness_bound(url))
        try:
            conn.execute("SELECT 1")
        except psycopg.Error:
            return None
        finally:
            fired = watchdog.disarm()
            watchdog.close()
        return None if fired else conn

    @contextmanager
    def session(self, url: str) -> Iterator[psycopg.Connection[Any]]:
        """The kept connection to `url` if it still answers, else a new one; closed when
        the block raises."""
        conn = self._alive(url)
        if conn is None:
            self.close()
            conn = connect(url)
            self._conn, self._url = conn, url
        try:
            yield conn
        except BaseException:
            self.close()
            raise


@contextmanager
def _one_connection(url: str) -> Iterator[psycopg.Connection[Any]]:
    with connect(url) as conn:
        yield conn


@dataclass(frozen=True)
class Leaf:
    index: int
    table: str
    row_id: int
    ledger_seq: int | None
    leaf_hash: bytes


def _order_key(item: tuple[str, dict[str, Any]]) -> tuple[Any, ...]:
    table, row = item
    seq = row["ledger_seq"]
    # Unsequenced (legacy) rows first, by time; then the sequence, which is commit order.
    return (seq is not None, seq or 0, row[_TIME.get(table, "created_at")], TABLES.index(table))


def leaf_count(conn: psycopg.Connection[Any]) -> int:
    """The number of leaves, from the primary key."""
    row = conn.execute("SELECT coalesce(max(leaf_index) + 1, 0) FROM ledger_leaves").fetchone()
    assert row is not None
    return int(row[0])


def last_leaf(conn: psycopg.Connection[Any]) -> tuple[int, int | None]:
    """(number of leaves, the highest ledger_seq a leaf has): 0010's rule, which ran with
    an index on ledger_seq (0015 dropped it: the signer no longer asks)."""
    row = conn.execute("SELECT max(ledger_seq) FROM ledger_leaves").fetchone()
    assert row is not None
    return leaf_count(conn), row[0]


def _new_rows(
    conn: psycopg.Connection[Any], size: int, top_seq: int | None, tables: Sequence[str]
) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    with conn.cursor(row_factory=dict_row) as cur:
        for table in tables:
            if size == 0:
                cur.execute(f"SELECT * FROM {table}")  # noqa: S608 (a constant)
            else:
                cur.execute(
                    f"SELECT * FROM {table} WHERE ledger_seq > %s",  # noqa: S608
                    (top_seq or 0,),
                )
            found.extend((table, row) for row in cur.fetchall())
    found.sort(key=_order_key)
    return found


def assign_leaves_by_sequence(conn: psycopg.Connection[Any], tables: Sequence[str] = TABLES) -> int:
    """Migration 0010's rule, from before rows carried their leaf index: the rows with a
    ledger_seq above the last leaf's (every row, when there is no leaf), in sequence order,
    become the next leaves; the number given. `tables`: the ledger tables of the schema at
    hand (a migration passes those it knows)."""
    size, top_seq = last_leaf(conn)
    rows = _new_rows(conn, size, top_seq, tables)
    return _append_leaves(conn, size, rows)


def _claimed_rows(conn: psycopg.Connection[Any], size: int) -> list[tuple[str, dict[str, Any]]]:
    """The rows whose claimed index is `size` or above, in index order, up to the first
    gap (a gap is a row deleted before it became a leaf: the audit names it)."""
    found: list[tuple[str, dict[str, Any]]] = []
    with conn.cursor(row_factory=dict_row) as cur:
        for table in TABLES:
            cur.execute(
                f"SELECT * FROM {table} WHERE leaf_index >= %s",  # noqa: S608 (a constant)
                (size,),
            )
            found.extend((table, row) for row in cur.fetchall())
    found.sort(key=lambda item: int(item[1]["leaf_index"]))
    for offset, (_, row) in enumerate(found):
        if row["leaf_index"] != size + offset:
            return found[:offset]
    return found


# The canonical text of each field kind, as SQL (docs/LEDGER.md, "Leaves"; ledger/leaf.py
# is the reference: the audit re-encodes every leaf there and compares).
_KIND_SQL: Final = {
    FieldKind.INT: "({})::text",
    FieldKind.RATE: "(({})::numeric(12, 10))::text",
    FieldKind.TEXT: "({})::text",
    FieldKind.TIME: """to_char(({}) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')""",
    FieldKind.UUID: "(({})::uuid)::text",
    FieldKind.HEX: "encode({}, 'hex')",
}
# Fields that are no column of their table (by default a field is the column of its name).
_FIELD_SOURCES: Final = {
    "config_audit": {
        f"{side}_{key}": f"({side} ->> '{key}')"
        for side in ("before", "after")
        for key in (
            "contribution_rate",
            "seed_amount",
            "max_amount",
            "version",
            # The extension (migration 0014): absent from the documents of earlier changes.
            "reserve_rate",
            "overflow_policy",
            "overflow_target",
        )
    },
    # A scheduled change's fields (ledger/rows.py _pending_fields): absent on suspend and
    # resume (no document); clear_max_amount is 1 when the document's value is truthy.
    "pool_lifecycle": {
        **{
            f"pending_{key}": f"(pending ->> '{key}')"
            for key in (
                "contribution_rate",
                "seed_amount",
                "max_amount",
                # The extension (migration 0014): where the change sets them.
                "reserve_rate",
                "overflow_policy",
                "overflow_target",
            )
        },
        "pending_clear_max_amount": (
            "(CASE WHEN pending IS NULL THEN NULL"
            " WHEN coalesce(pending -> 'clear_max_amount', 'null'::jsonb) IN ('null'::jsonb,"
            " 'false'::jsonb, '0'::jsonb, '\"\"'::jsonb, '[]'::jsonb, '{}'::jsonb)"
            " THEN 0 ELSE 1 END)"
        ),
    },
}


# array_send's header of a one-dimensional array (dimensions, null flag, element type,
# length, lower bound): 5 × 4 bytes; its elements follow.
_ARRAY_HEADER: Final = 20


def _field_source(table: str) -> Callable[[Field], str]:
    sources = _FIELD_SOURCES.get(table, {})
    return lambda field: sources.get(field.name, field.name)


def field_texts_sql(table: str, fields: Sequence[Field] | None = None) -> str:
    """The canonical texts of a row's leaf fields (all of its event type's by default), as
    a comma-separated list of SQL expressions (bench/ledger_floor.py prices them alone)."""
    source = _field_source(table)
    chosen = SCHEMAS[EVENT_OF_TABLE[table]] if fields is None else fields
    return ", ".join(_KIND_SQL[f.kind].format(source(f)) for f in chosen)


def leaf_sql(table: str) -> str:
    """An SQL expression of a row of `table` (its own columns) giving its leaf bytes, the
    encoding of ledger/leaf.py: PostgreSQL encodes and hashes new leaves in C, so signing
    costs a few microseconds a row. A new event type needs nothing here unless a field is
    no column of its own name (then _FIELD_SOURCES). An event type's extension fields are
    encoded whole when any of them is present, and not at all when none is (EXTENSION_FROM).

    The fields are one `text[]` sent in PostgreSQL's binary array format (`array_send`):
    after its header, each element is a 4-byte big-endian length and the text's bytes, and
    a NULL is length -1 (0xFFFFFFFF), which is the leaf's field encoding exactly. One call
    per row instead of a length, a conversion and a concatenation per field: a third of the
    CPU (BENCHMARKS.md). The bytes are in the session's client encoding, so the signer sets
    it to UTF8 (checkpoint_snapshot); on a UTF8 database (the default) they are the same."""
    event = EVENT_OF_TABLE[table]
    source = _field_source(table)

    def fields_of(fields: Sequence[Field]) -> str:
        texts = field_texts_sql(table, fields)
        return f"substr(array_send(ARRAY[{texts}]::text[]), {_ARRAY_HEADER + 1})"

    fields = SCHEMAS[event]
    first, extension = fields[: EXTENSION_FROM[event]], fields[EXTENSION_FROM[event] :]
    parts = [f"'\\x{VERSION:02x}{int(event):02x}'::bytea", fields_of(first)]
    if extension:
        # A field's text is absent exactly when its value is: test the values, not texts.
        present = " OR ".join(f"({source(f)}) IS NOT NULL" for f in extension)
        parts.append(f"(CASE WHEN {present} THEN {fields_of(extension)} ELSE ''::bytea END)")
    return " || ".join(parts)


def _claimed_count(conn: psycopg.Connection[Any], size: int) -> int:
    """How many rows carry an index from `size` on."""
    counts = " + ".join(
        f"(SELECT count(*) FROM {t} WHERE leaf_index >= %(size)s)"  # noqa: S608 (constants)
        for t in TABLES
    )
    row = conn.execute(f"SELECT {counts}", {"size": size}).fetchone()
    assert row is not None
    return int(row[0])


def assign_leaves(conn: psycopg.Connection[Any]) -> int:
    """Hash the rows committed since the last leaf into leaves, at the indexes they
    claimed when written; the number given. The caller holds the checkpoint lock, in a
    REPEATABLE READ transaction. PostgreSQL encodes and hashes them (leaf_sql); where a
    row is missing below the head (deleted before it became a leaf) the leaves stop at
    the gap, found in Python."""
    size = leaf_count(conn)
    (top,) = conn.execute("SELECT size FROM ledger_head").fetchone() or (size,)
    if top <= size:
        return 0
    if _claimed_count(conn, size) != top - size:
        return _append_leaves(conn, size, _claimed_rows(conn, size))
    # leaf_sql's texts are sent in the client encoding: the leaf's is UTF-8.
    conn.execute("SET LOCAL client_encoding TO 'UTF8'")
    for table in TABLES:
        # The table names and the leaf expression are constants.
        insert = (
            f"INSERT INTO ledger_leaves SELECT leaf_index, '{table}', id,"  # noqa: S608
            f" ledger_seq, pg_catalog.sha256('\\x00'::bytea || {leaf_sql(table)})"
            f" FROM {table} WHERE leaf_index >= %(size)s AND leaf_index < %(top)s"
        )
        conn.execute(insert, {"size": size, "top": top})
    return int(top - size)


def _append_leaves(
    conn: psycopg.Connection[Any], size: int, rows: list[tuple[str, dict[str, Any]]]
) -> int:
    if not rows:
        return 0
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY ledger_leaves (leaf_index, ledger_table, row_id, ledger_seq, leaf_hash)"
            " FROM STDIN"
        ) as copy,
    ):
        for offset, (table, row) in enumerate(rows):
            index = size + offset
            leaf = leaf_of(table, row, index)
            copy.write_row((index, table, row["id"], row["ledger_seq"], merkle.leaf_hash(leaf)))
    return len(rows)


def leaves(conn: psycopg.Connection[Any], since: int = 0) -> Iterator[Leaf]:
    """The leaves from index `since` on, in index order, as recorded (the hash is a hint:
    audits recompute it)."""
    with conn.cursor(name="ledger_leaves") as cur:
        cur.itersize = 10000
        cur.execute(
            "SELECT leaf_index, ledger_table, row_id, ledger_seq, leaf_hash"
            " FROM ledger_leaves WHERE leaf_index >= %s ORDER BY leaf_index",
            (since,),
        )
        for index, table, row_id, seq, leaf_hash in cur:
            yield Leaf(index, table, row_id, seq, bytes(leaf_hash))


def rows_of(conn: psycopg.Connection[Any], table: str, since: int = 0) -> dict[int, dict[str, Any]]:
    """The rows of a ledger table by id: every row, or (since > 0) those whose index is
    `since` or above, and those without one (older than receipts, 0013) whose leaf is from
    `since` on or that are no leaf: index range scans, so the cost grows with the rows
    since `since` (and the rows from before receipts)."""
    if table not in TABLES:
        raise ValueError(table)
    with conn.cursor(row_factory=dict_row) as cur:
        if since == 0:
            cur.execute(f"SELECT * FROM {table}")  # noqa: S608 (checked above)
        else:
            cur.execute(
                f"SELECT * FROM {table} WHERE leaf_index >= %(since)s"  # noqa: S608
                f" UNION ALL SELECT t.* FROM {table} t LEFT JOIN ledger_leaves l"
                " ON l.ledger_table = %(table)s AND l.row_id = t.id"
                # Their leaves are below receipts (0013): 0017's partial index.
                " AND l.leaf_index < ledger_receipts_from()"
                " WHERE t.leaf_index IS NULL"
                " AND (l.leaf_index IS NULL OR l.leaf_index >= %(since)s)",
                {"table": table, "since": since},
            )
        return {row["id"]: row for row in cur}


@dataclass(frozen=True)
class Head:
    """ledger_head: the leaf indexes handed out, and the first that rows carry (0013)."""

    size: int
    receipts_from: int


def head(conn: psycopg.Connection[Any]) -> Head:
    row = conn.execute("SELECT size, receipts_from FROM ledger_head").fetchone()
    return Head(int(row[0]), int(row[1])) if row else Head(0, 0)


def pool_amounts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT jackpot_group, current_amount FROM jackpots ORDER BY lock_order")
    return {group: int(amount) for group, amount in rows}


HASHES_PER_READ: Final = 1 << 20  # leaf hashes per statement (32 MiB)

# Leaf hashes concatenated in index order, without sorting them: a plain aggregate takes
# its input in the order its subquery yields it, and that subquery (ORDER BY and LIMIT: it
# is never merged into the aggregate's query level nor split into parallel parts) reads
# the primary key in order. `string_agg(… ORDER BY leaf_index)` sorts its input even when
# it arrives sorted (PostgreSQL 15), and spilled to disk at a few hundred thousand hashes.
HASHES_IN_ORDER: Final = """SELECT string_agg(leaf_hash, ''::bytea) FROM (
    SELECT leaf_hash FROM ledger_leaves
    WHERE leaf_index >= %(start)s AND leaf_index < %(end)s
    ORDER BY leaf_index LIMIT %(end)s - %(start)s) in_index_order"""


def leaf_hash_bytes(conn: psycopg.Connection[Any], start: int = 0) -> bytes:
    """The recorded leaf hashes from index `start` on, concatenated in index order: read
    as one value per million (a row per hash costs more in the driver than hashing it
    does), and kept as one value (merkle.Frontier.extend takes them so)."""
    chunks: list[bytes] = []
    while True:
        row = conn.execute(
            HASHES_IN_ORDER, {"start": start, "end": start + HASHES_PER_READ}
        ).fetchone()
        data = bytes(row[0]) if row is not None and row[0] is not None else b""
        chunks.append(data)
        if len(data) < HASHES_PER_READ * merkle.HASH_SIZE:
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        start += HASHES_PER_READ


def leaf_hashes(conn: psycopg.Connection[Any], start: int = 0) -> list[bytes]:
    """The recorded leaf hashes from index `start` on, in index order, one by one."""
    data = leaf_hash_bytes(conn, start)
    return [data[at : at + merkle.HASH_SIZE] for at in range(0, len(data), merkle.HASH_SIZE)]


@dataclass(frozen=True)
class LedgerSnapshot:
    """What a checkpoint signs: the tree's leaf hashes (as recorded, concatenated) from the
    index asked for on, and the pools; and what a signer holding a tree in memory checks
    before it extends it: which database history this is (identity) and the recorded hash
    of the leaf just below the index asked for (None: there is none)."""

    leaf_hashes: bytes
    pools: dict[str, int]
    assigned: int
    identity: ClusterIdentity
    previous: bytes | None


def cluster_identity(conn: psycopg.Connection[Any]) -> ClusterIdentity:
    """database_liveness.cluster_identity, on a synchronous connection."""
    row = conn.execute(IDENTITY).fetchone()
    assert row is not None
    system_identifier, checkpoint_timeline, wal_file = row
    timeline = int(wal_file[:8], 16) if wal_file else int(checkpoint_timeline)
    return ClusterIdentity(int(system_identifier), timeline)


def _leaf_hash_at(conn: psycopg.Connection[Any], index: int) -> bytes | None:
    if index < 0:
        return None
    row = conn.execute(
        "SELECT leaf_hash FROM ledger_leaves WHERE leaf_index = %s", (index,)
    ).fetchone()
    return None if row is None else bytes(row[0])


# The signer's own row in the readiness probe's heartbeat table (migration 0011): written
# in every signing transaction, so that transaction is a write whose COMMIT waits for a
# synchronous standby even when no row became a leaf.
SIGNER_HEARTBEAT = """INSERT INTO write_heartbeat (process) VALUES ('ledger-checkpoint-signer')
ON CONFLICT (process) DO UPDATE SET beat_at = now()"""


@contextmanager
def _session_lock(conn: psycopg.Connection[Any], wait: bool) -> Iterator[bool]:
    """The signer's lock, taken before the snapshot so the snapshot sees the last signer's
    leaves; session-scoped, released on the way out."""
    if wait:
        conn.execute("SELECT pg_advisory_lock(%s)", (CHECKPOINT_LOCK_KEY,))
        got = True
    else:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (CHECKPOINT_LOCK_KEY,)).fetchone()
        got = bool(row and row[0])
    try:
        yield got
    finally:
        if got:
            conn.execute("SELECT pg_advisory_unlock(%s)", (CHECKPOINT_LOCK_KEY,))


@contextmanager
def checkpoint_snapshot(
    url: str, wait: bool = True, since: int = 0, kept: SignerConnection | None = None
) -> Iterator[LedgerSnapshot | None]:
    """Under the signer's lock: give new rows their leaves, and yield the leaf hashes and
    pool amounts of one snapshot (None: another process is signing). The leaves commit
    when the block ends without error (so a checkpoint is written after its leaves exist);
    a commit answered with a synchronous-replication warning (its wait for the standby was
    cancelled) raises CommitOutcomeUnknown: no checkpoint covers leaves a failover may lose.

    The transaction always writes (SIGNER_HEARTBEAT), even when no row is new: leaves an
    earlier turn committed whose standby wait was cancelled are committed locally, and
    only a later COMMIT that waits for the standby and returns without that warning shows
    they were replicated (a read-only transaction waits for nothing).

    `kept`: the signer's connection across turns (else one connection for this call)."""
    opened = kept.session(url) if kept is not None else _one_connection(url)
    with opened as conn, _session_lock(conn, wait) as got:
        if not got:
            yield None
            return
        warnings = commit_warnings(conn)
        warnings.clear()
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            conn.execute(SIGNER_HEARTBEAT)
            assigned = assign_leaves(conn)
            yield LedgerSnapshot(
                leaf_hash_bytes(conn, since),
                pool_amounts(conn),
                assigned,
                cluster_identity(conn),
                _leaf_hash_at(conn, since - 1),
            )
        if warnings:
            raise unknown(SYNC_REP_CANCELLED)


@dataclass(frozen=True)
class AuditSnapshot:
    leaves: list[Leaf]
    rows: dict[str, dict[int, dict[str, Any]]]
    pools: dict[str, int]
    head: Head


def audit_snapshot(url: str, since: int = 0) -> AuditSnapshot:
    """The leaves from index `since` on, their rows and every row that is no leaf, and the
    pools, in one read-only snapshot."""
    with connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            found = list(leaves(conn, since))
            return AuditSnapshot(
                found,
                {t: rows_of(conn, t, since) for t in TABLES},
                pool_amounts(conn),
                head(conn),
            )


def recorded_hashes(url: str) -> list[bytes]:
    """Every leaf's recorded hash, in index order."""
    with connect(url) as conn:
        return leaf_hashes(conn)


async def proof_leaf(
    conn: psycopg.AsyncConnection[Any],
    *,
    leaf_index: int | None = None,
    row: tuple[str, int] | None = None,
) -> tuple[Leaf, dict[str, Any]] | None:
    """The leaf (by index, or by its row's table and id) and its row; None when it is no
    leaf (or its row is gone)."""
    columns = "leaf_index, ledger_table, row_id, ledger_seq, leaf_hash"
    if row is not None:
        if row[0] not in TABLES:
            raise ValueError(row[0])
        # The row's own leaf index (0013 on), or for a row from before receipts its leaf
        # by (table, id) on 0017's partial index; the leaf found must be that row's.
        cur = await conn.execute(
            f"SELECT {columns} FROM ledger_leaves"  # noqa: S608 (constants)
            " WHERE ledger_table = %(table)s AND row_id = %(id)s AND leaf_index = ("
            f"SELECT coalesce(t.leaf_index, (SELECT l.leaf_index FROM ledger_leaves l"
            " WHERE l.ledger_table = %(table)s AND l.row_id = t.id"
            f" AND l.leaf_index < ledger_receipts_from())) FROM {row[0]} t WHERE t.id = %(id)s)",
            {"table": row[0], "id": row[1]},
        )
    else:
        cur = await conn.execute(
            f"SELECT {columns} FROM ledger_leaves WHERE leaf_index = %s",  # noqa: S608
            (leaf_index,),
        )
    found = await cur.fetchone()
    if found is None:
        return None
    leaf = Leaf(found[0], found[1], found[2], found[3], bytes(found[4]))
    async with conn.cursor(row_factory=dict_row) as rows:
        await rows.execute(
            f"SELECT * FROM {leaf.table} WHERE id = %s",  # noqa: S608 (a TABLES name)
            (leaf.row_id,),
        )
        record = await rows.fetchone()
    return None if record is None else (leaf, record)


async def leaf_hash_range(conn: psycopg.AsyncConnection[Any], start: int, end: int) -> list[bytes]:
    """The recorded leaf hashes of the leaves [start, end), in index order."""
    cur = await conn.execute(
        "SELECT leaf_hash FROM ledger_leaves"
        " WHERE leaf_index >= %s AND leaf_index < %s ORDER BY leaf_index",
        (start, end),
    )
    return [bytes(h) for (h,) in await cur.fetchall()]


@dataclass(frozen=True)
class CheckpointComparison:
    """A signed checkpoint's leaves against a database: which of its indices the database
    lacks (inclusive ranges), and whether the leaves it has give the checkpoint's root
    (None: not computed, because leaves are missing or it was not asked)."""

    size: int
    present: int
    missing: list[tuple[int, int]]
    root_matches: bool | None

    @property
    def missing_count(self) -> int:
        return sum(last - first + 1 for first, last in self.missing)


# The gaps below `size` in the leaf indices (leaf_index is the primary key): between two
# consecutive leaves, and after the last one.
MISSING_LEAVES = """SELECT prev + 1, leaf_index - 1 FROM (
    SELECT leaf_index, lag(leaf_index, 1, -1::bigint) OVER (ORDER BY leaf_index) AS prev
    FROM ledger_leaves WHERE leaf_index < %(size)s) t
WHERE leaf_index > prev + 1
UNION ALL
SELECT coalesce(max(leaf_index), -1) + 1, %(size)s - 1 FROM ledger_leaves
WHERE leaf_index < %(size)s HAVING coalesce(max(leaf_index), -1) + 1 < %(size)s
ORDER BY 1"""


def compare_with_checkpoint(
    url: str, size: int, root: bytes, *, check_root: bool = True
) -> CheckpointComparison:
    """The leaves a checkpoint of `size` leaves and `root` covers, as this database has
    them: after an asynchronous failover, the acknowledged rows the new primary never
    received are the checkpoint's indices it lacks."""
    with connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            row = conn.execute(
                "SELECT count(*) FROM ledger_leaves WHERE leaf_index < %s", (size,)
            ).fetchone()
            present = int(row[0]) if row is not None else 0
            missing = [
                (int(first), int(last))
                for first, last in conn.execute(MISSING_LEAVES, {"size": size})
            ]
            matches: bool | None = None
            if check_root and not missing:
                frontier = merkle.Frontier()
                for (leaf_hash,) in conn.execute(
                    "SELECT leaf_hash FROM ledger_leaves WHERE leaf_index < %s ORDER BY leaf_index",
                    (size,),
                ):
                    frontier.append(bytes(leaf_hash))
                matches = frontier.root() == root
    return CheckpointComparison(size, present, missing, matches)
