"""Every database connection the package opens, one opener per kind: the service's pool
(create_db_pool; its batch connection takes batch_connection_kwargs), the side pool for reads
on demand (create_side_db_pool), the health probe's connection (connect_probe), the change
listener's (connect_listener), an operator command's (connect_ops), alembic's
(connect_migration), and the URLs of the synchronous connections opened elsewhere: the
ledger's (ledger_conninfo), the failover watch's (failover_watch_conninfo), an operator
command's ledger work (ops_conninfo). Each kind's application_name (what pg_stat_activity
shows) and connect timeout are set here and nowhere else. The pools are created closed,
opened and closed explicitly by their owner.

Every server connection carries the lock and statement timeouts (DB_LOCK_TIMEOUT,
DB_STATEMENT_TIMEOUT) in libpq's `options`, i.e. in the startup packet: they hold from the
first statement of every connection, reconnections included, at no extra round trip (a
`configure` callback running SET would cost one on every new connection).

Behind PgBouncer in transaction mode (DB_PGBOUNCER=1) consecutive transactions of one pool
connection may run on different server connections, so nothing may live in the session:
the pool's connections never prepare statements (prepare_threshold=None), and no `options`
are sent (PgBouncer refuses them): set the timeouts on the role instead,
`ALTER ROLE jackpot SET lock_timeout = '2s'; ALTER ROLE jackpot SET statement_timeout = '5s'`.
The service keeps no other session state: isolation is set per transaction, advisory locks
are transaction-scoped and nothing LISTENs (docs/REPLICAS.md, "Behind PgBouncer").

A connection is checked before it is handed out without a round trip: an idle connection
has nothing to read, one the server closed (terminated, restarted) has its FATAL message
or end-of-file waiting. Finding one dead sweeps the idle ones at once, so the next request
waits for one new connection, not for the pool's one-second backoff between checks.
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from jackpot_grpc.config import Settings

# Each kind of connection by its name in pg_stat_activity. Every name contains "jackpot",
# as the runbook's `application_name LIKE '%jackpot%'` expects.
APPLICATION_NAME = "jackpot-service"  # the service's pool and its batch connection
SIDE_APPLICATION_NAME = "jackpot-on-demand"
PROBE_APPLICATION_NAME = "jackpot-health-probe"
LISTENER_APPLICATION_NAME = "jackpot-listener"
LEDGER_APPLICATION_NAME = "jackpot-ledger"
FAILOVER_WATCH_APPLICATION_NAME = "jackpot-failover-watch"
OPS_APPLICATION_NAME = "jackpot-ops"  # also the client tools' (pg_dump, pg_restore) PGAPPNAME
MIGRATION_APPLICATION_NAME = "jackpot-migrate"

# An operator command's connection waits this long for the server unless told otherwise
# (--timeout); the service's connections wait DB_CONNECT_TIMEOUT per host.
OPS_CONNECT_TIMEOUT = 5.0

# The one spelling of a psycopg connection pool's type, for everyone who is handed one
# (not a jackpot pool: that is domain.model.PoolState).
DbPool = AsyncConnectionPool[AsyncConnection[Any]]
# An operator command's connection: synchronous, autocommit, dict rows.
OpsConn = psycopg.Connection[dict[str, Any]]


def connection_kwargs(
    settings: Settings,
    database_url: str,
    *,
    application_name: str = APPLICATION_NAME,
    statement_timeout: float | None = None,
) -> dict[str, Any]:
    """What a connection of ours is opened with; `statement_timeout` overrides the
    setting's (the side pool's longer bound)."""
    kwargs: dict[str, Any] = {"application_name": application_name}
    if "connect_timeout" not in conninfo_to_dict(database_url):
        # Per host of a multi-host URL (libpq tries them in turn): a primary that drops
        # packets costs every new connection this long, so it is short (DB_CONNECT_TIMEOUT).
        kwargs["connect_timeout"] = max(1, round(settings.database.connect_timeout))
    if settings.database.pgbouncer:
        # Server-side prepared statements belong to a server session, which a transaction
        # pooler hands to another client between transactions.
        kwargs["prepare_threshold"] = None
        return kwargs
    options = server_options(settings, database_url, statement_timeout=statement_timeout)
    if options:
        kwargs["options"] = options
    return kwargs


# The batch connection runs the same few statements thousands of times a second, each a
# short batch whose plan does not depend on its parameters (arrays of the batch's values,
# one row per pool). PostgreSQL's plan cache kept re-planning them (a custom plan each
# time: ~0.7 ms of the database's CPU for the one-statement batch, about as long as
# running it), so this connection always takes the generic plan, planned once a session
# (BENCHMARKS.md, "group commit's fixed cost").
BATCH_PLAN_OPTION = "-c plan_cache_mode=force_generic_plan"


def batch_connection_kwargs(settings: Settings, database_url: str) -> dict[str, Any]:
    """What the batch thread's connection is opened with: connection_kwargs and, unless
    behind PgBouncer (no options, no prepared statements), generic plans."""
    kwargs = connection_kwargs(settings, database_url)
    if not settings.database.pgbouncer:
        kwargs["options"] = " ".join(filter(None, (kwargs.get("options"), BATCH_PLAN_OPTION)))
    return kwargs


def bounded_conninfo(
    settings: Settings, database_url: str, *, application_name: str, statement_timeout: float
) -> tuple[str, float]:
    """The URL with connection_kwargs' bounds written in (a bound the URL already gives
    wins), for code that is handed a URL and opens its own connection; and how long such a
    connection's work of three statements can last at most (connect_timeout per host)."""
    kwargs = connection_kwargs(
        settings,
        database_url,
        application_name=application_name,
        statement_timeout=statement_timeout,
    )
    kwargs.pop("prepare_threshold", None)  # psycopg's, not libpq's
    url = make_conninfo(database_url, **kwargs)
    params = conninfo_to_dict(url)
    hosts = max(1, len(str(params.get("host") or "").split(",")))
    connect = float(params.get("connect_timeout") or settings.database.connect_timeout)
    return url, hosts * connect + 3 * statement_timeout + 1.0


def ledger_conninfo(settings: Settings, database_url: str) -> str:
    """The URL the ledger's synchronous connections use (checkpoint signing, the failover
    watch's checkpoint comparison): DB_CONNECT_TIMEOUT per host like every connection of
    ours, but no statement timeout (a first checkpoint of a large ledger hashes every row
    in one statement)."""
    kwargs = connection_kwargs(settings, database_url, application_name=LEDGER_APPLICATION_NAME)
    kwargs.pop("options", None)
    kwargs.pop("prepare_threshold", None)
    return make_conninfo(database_url, **kwargs)


def failover_watch_conninfo(settings: Settings, database_url: str) -> tuple[str, float]:
    """The URL of the failover watch's own connection (its checkpoint comparison, in a
    thread) and how long its work can last: every bound the server's connections have, and
    the side pool's statement timeout (the root check may read every leaf)."""
    return bounded_conninfo(
        settings,
        database_url,
        application_name=FAILOVER_WATCH_APPLICATION_NAME,
        statement_timeout=settings.database.side_statement_timeout,
    )


async def connect_probe(settings: Settings, database_url: str) -> AsyncConnection[Any]:
    """The health probe's own autocommit connection: apart from the pool, with the probe's
    timeout as its statement timeout so a stuck query cannot hold it."""
    kwargs = connection_kwargs(
        settings,
        database_url,
        application_name=PROBE_APPLICATION_NAME,
        statement_timeout=max(0.001, settings.health.probe_timeout),
    )
    return await AsyncConnection.connect(database_url, autocommit=True, **kwargs)


async def connect_listener(settings: Settings, database_url: str) -> AsyncConnection[Any]:
    """The change listener's autocommit connection (LISTEN holds a session of its own)."""
    kwargs = connection_kwargs(settings, database_url, application_name=LISTENER_APPLICATION_NAME)
    return await AsyncConnection.connect(database_url, autocommit=True, **kwargs)


def connect_ops(
    url: str, *, dbname: str | None = None, timeout: float = OPS_CONNECT_TIMEOUT
) -> OpsConn:
    """An operator command's connection: autocommit (each statement its own transaction),
    dict rows, no statement timeout (maintenance may run long); `timeout` is the connect
    timeout, in whole seconds (at least 1), over any the URL gives."""
    conninfo = make_conninfo(url, dbname=dbname) if dbname else url
    return psycopg.connect(
        conninfo,
        autocommit=True,
        connect_timeout=max(1, round(timeout)),
        application_name=OPS_APPLICATION_NAME,
        row_factory=dict_row,
    )


def ops_conninfo(url: str) -> str:
    """The URL an operator command hands to code that opens its own connection (the
    ledger's: adapters.ledger_store.connect): the operator's application_name, and its
    connect timeout unless the URL gives one."""
    params = conninfo_to_dict(url)
    timeout = params.get("connect_timeout") or round(OPS_CONNECT_TIMEOUT)
    return make_conninfo(url, application_name=OPS_APPLICATION_NAME, connect_timeout=timeout)


def connect_migration(url: str) -> psycopg.Connection[Any]:
    """Alembic's connection (migrations/env.py): transactional, tuple rows, the operator's
    connect timeout unless the URL gives one."""
    kwargs: dict[str, Any] = {"application_name": MIGRATION_APPLICATION_NAME}
    if "connect_timeout" not in conninfo_to_dict(url):
        kwargs["connect_timeout"] = round(OPS_CONNECT_TIMEOUT)
    return psycopg.connect(url, **kwargs)


def server_options(
    settings: Settings, database_url: str, *, statement_timeout: float | None = None
) -> str | None:
    """libpq `options` with the timeouts, after any the URL already gives; 0 leaves a
    timeout to the server (or the role's setting)."""
    parts = [str(conninfo_to_dict(database_url).get("options") or "").strip()]
    statement = (
        settings.database.statement_timeout if statement_timeout is None else statement_timeout
    )
    for name, seconds in (
        ("lock_timeout", settings.database.lock_timeout),
        ("statement_timeout", statement),
    ):
        if seconds > 0:
            parts.append(f"-c {name}={round(seconds * 1000)}")
    joined = " ".join(p for p in parts if p)
    return joined or None


class IdleCheck:
    """The pool's `check`: zero round trips for a live connection (see the module doc)."""

    def __init__(self) -> None:
        self.db_pool: DbPool | None = None

    async def __call__(self, conn: AsyncConnection[Any]) -> None:
        if not conn.closed and not has_input(conn):
            return
        if not conn.closed:
            try:  # something to read: most likely the server's goodbye; make sure
                await AsyncConnectionPool.check_connection(conn)
                return
            except psycopg.Error:
                pass
        if self.db_pool is not None:
            await self.db_pool.check()  # the others died with it: replace them all now
        raise psycopg.OperationalError("the server closed the connection")


def has_input(conn: AsyncConnection[Any] | psycopg.Connection[Any]) -> bool:
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.OperationalError):
        return True
    return bool(readable)


def create_db_pool(settings: Settings, database_url: str) -> DbPool:
    """The service's connection pool, the one every call's transaction borrows from."""
    check = IdleCheck()
    db_pool: DbPool = AsyncConnectionPool(
        database_url,
        min_size=settings.database.pool_min_size,
        max_size=settings.database.pool_max_size,
        timeout=settings.database.pool_timeout,
        # Past this many callers queued for a connection, the next is refused at once
        # (RESOURCE_EXHAUSTED) instead of waiting out the timeout: overload fails fast.
        max_waiting=settings.database.pool_max_waiting,
        open=False,
        # A connection the server killed is detected before it is handed out.
        check=check,
        kwargs=connection_kwargs(settings, database_url),
        # No exponential backoff after an outage: a failed background reconnect gives up
        # at once, and the next request for a connection (the health probe asks every
        # interval) tries again, so the pool follows the database back within a probe.
        reconnect_timeout=0,
        name="jackpot",
    )
    check.db_pool = db_pool
    return db_pool


def create_side_db_pool(settings: Settings, database_url: str) -> DbPool:
    """The small pool for expensive reads on demand (ledger audits, long metric periods):
    they can never take a connection Contribute needs, and every statement on it is cut
    off after JACKPOT_SIDE_STATEMENT_TIMEOUT. Past a few waiters, callers are refused."""
    return AsyncConnectionPool(
        database_url,
        min_size=0,
        max_size=max(1, settings.database.side_pool_max_size),
        timeout=settings.database.pool_timeout,
        max_waiting=4 * max(1, settings.database.side_pool_max_size),
        open=False,
        check=AsyncConnectionPool.check_connection,
        kwargs=connection_kwargs(
            settings,
            database_url,
            application_name=SIDE_APPLICATION_NAME,
            statement_timeout=max(0.001, settings.database.side_statement_timeout),
        ),
        reconnect_timeout=0,
        name="jackpot-on-demand",
    )
