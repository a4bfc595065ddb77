"""The settings, one frozen group per component, each read by its own `from_env` beside it.

Environment variable names are the service's interface (README.md, "Ports and
environment"); the groups are only how the code holds them: a component is handed its
group (`settings.database`, `settings.tls`...) where it needs no other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from jackpot_grpc.config.readers import (
    Env,
    read_bounded_int,
    read_choice,
    read_dir,
    read_flag,
    read_float,
    read_int,
    read_path,
    read_rate_bound,
    read_trusted_proxies,
)
from jackpot_grpc.domain.rules import INT64_MAX
from jackpot_grpc.domain.validation import MAX_RATE_SUM, MAX_WAGER_AMOUNT
from jackpot_grpc.transport.peer_address import TrustedProxies

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
LOG_FORMATS = ("text", "json")
DEFAULT_GRPC_PORT = 50051


def log_format_of(env: Env) -> str:
    return read_choice(env, "JACKPOT_LOG_FORMAT", "text", LOG_FORMATS)


def shutdown_grace_of(env: Env) -> float:
    return read_float(env, "JACKPOT_SHUTDOWN_GRACE", 10.0)


@dataclass(frozen=True)
class DatabaseSettings:
    url: str | None  # DATABASE_URL
    # No DATABASE_URL: refuse, unless a throwaway embedded server is asked for.
    embedded: bool
    migrate_on_start: bool
    data_dir: Path  # the embedded server's
    backup_dir: Path
    pool_min_size: int
    pool_max_size: int
    pool_timeout: float
    pool_max_waiting: int
    pgbouncer: bool  # DB_PGBOUNCER: the pool talks to PgBouncer in transaction mode
    # Every server connection's lock_timeout and statement_timeout (seconds; 0: the
    # server's or the role's own): a call never waits on a lock or a query past them.
    lock_timeout: float
    statement_timeout: float
    # Database failover (docs/DEPLOY.md, "Replication and failover"): libpq's
    # connect_timeout, which applies per host of a multi-host DSN (a connect_timeout in
    # DATABASE_URL wins); the longest wait for a COMMIT's answer before the connection is
    # closed and the callers told COMMIT_OUTCOME_UNKNOWN (0: no bound).
    connect_timeout: float
    commit_timeout: float
    # The small pool of on-demand reads and the background audit (docs/RELIABILITY.md).
    side_pool_max_size: int
    side_statement_timeout: float

    @classmethod
    def from_env(cls, env: Env) -> DatabaseSettings:
        return cls(
            url=env.get("DATABASE_URL") or None,
            embedded=read_flag(env, "JACKPOT_EMBEDDED_DB", False),
            migrate_on_start=read_flag(env, "JACKPOT_MIGRATE_ON_START", False),
            data_dir=read_dir(env, "JACKPOT_DATA_DIR", ".data/postgres"),
            backup_dir=read_dir(env, "JACKPOT_BACKUP_DIR", "backups"),
            pool_min_size=read_int(env, "DB_POOL_MIN", 2),
            pool_max_size=read_int(env, "DB_POOL_MAX", 10),
            pool_timeout=read_float(env, "DB_POOL_TIMEOUT", 2.0),
            pool_max_waiting=read_int(env, "DB_POOL_MAX_WAITING", 64),
            pgbouncer=read_flag(env, "DB_PGBOUNCER", False),
            lock_timeout=read_float(env, "DB_LOCK_TIMEOUT", 2.0),
            statement_timeout=read_float(env, "DB_STATEMENT_TIMEOUT", 5.0),
            connect_timeout=read_float(env, "DB_CONNECT_TIMEOUT", 2.0),
            commit_timeout=read_float(env, "JACKPOT_COMMIT_TIMEOUT", 5.0),
            side_pool_max_size=read_int(env, "JACKPOT_SIDE_POOL_MAX", 2),
            side_statement_timeout=read_float(env, "JACKPOT_SIDE_STATEMENT_TIMEOUT", 30.0),
        )


@dataclass(frozen=True)
class BatchSettings:
    """Group commit of concurrent contributions."""

    enabled: bool  # JACKPOT_BATCHING
    max_size: int
    linger: float
    queue_max_size: int
    # The age past which a batch still in flight turns readiness NOT_SERVING; never below
    # the commit timeout (refused at start, Settings.checked).
    age_limit: float

    @classmethod
    def from_env(cls, env: Env) -> BatchSettings:
        if env.get("JACKPOT_BATCH_EXECUTOR", "").strip():  # retired: one executor (DECISIONS)
            log.warning("JACKPOT_BATCH_EXECUTOR is ignored: batches always run on their thread")
        return cls(
            enabled=read_flag(env, "JACKPOT_BATCHING", True),
            max_size=read_int(env, "JACKPOT_BATCH_MAX", 512),
            linger=read_float(env, "JACKPOT_BATCH_LINGER", 0.02),
            queue_max_size=read_int(env, "JACKPOT_QUEUE_MAX", 8192),
            age_limit=read_float(env, "JACKPOT_BATCH_AGE_LIMIT", 6.0),
        )


@dataclass(frozen=True)
class GrpcSettings:
    """The gRPC server's address and bounds (docs/RELIABILITY.md), and where clients of
    ours (the gateway, the CLI) reach it."""

    host: str
    port: int
    reuse_port: bool
    target: str  # JACKPOT_GRPC_TARGET
    max_streams_per_connection: int
    max_pending_calls: int | None  # None: gRPC core's own
    keepalive_time: float
    keepalive_timeout: float
    min_ping_interval: float
    max_connection_age: float
    max_connection_age_grace: float
    max_in_flight: int
    max_in_flight_per_connection: int

    @classmethod
    def from_env(cls, env: Env, *, closed: bool) -> GrpcSettings:
        """`closed`: clients are configured; open, the server listens on loopback only."""
        streams = read_int(env, "GRPC_MAX_STREAMS_PER_CONNECTION", 1024)
        port = read_int(env, "GRPC_PORT", DEFAULT_GRPC_PORT)
        return cls(
            host=env.get("GRPC_HOST") or ("[::]" if closed else LOOPBACK),
            port=port,
            reuse_port=read_flag(env, "JACKPOT_REUSE_PORT", False),
            # The gateway's default target is this machine's gRPC port, so `jackpot run`
            # with a GRPC_PORT of its own still wires the two together.
            target=env.get("JACKPOT_GRPC_TARGET") or f"localhost:{port}",
            max_streams_per_connection=streams,
            # Unset: gRPC core's own (drops at random from 1,000 waiting, all from 3,000).
            max_pending_calls=read_int(env, "GRPC_MAX_PENDING_CALLS", 0) or None,
            keepalive_time=read_float(env, "GRPC_KEEPALIVE_TIME", 60.0),
            keepalive_timeout=read_float(env, "GRPC_KEEPALIVE_TIMEOUT", 20.0),
            min_ping_interval=read_float(env, "GRPC_MIN_PING_INTERVAL", 10.0),
            max_connection_age=read_float(env, "GRPC_MAX_CONNECTION_AGE", 300.0),
            # Default: the shutdown grace, so a call in flight when its connection ages
            # out has as long to finish as it would on shutdown.
            max_connection_age_grace=read_float(
                env, "GRPC_MAX_CONNECTION_AGE_GRACE", shutdown_grace_of(env)
            ),
            max_in_flight=read_int(env, "JACKPOT_MAX_IN_FLIGHT", 512),
            # Default: the streams a connection may open, so by default only the total binds
            # (one busy backend connection is not refused for its own burst); set lower to
            # cap what one connection may hold.
            max_in_flight_per_connection=read_int(
                env, "JACKPOT_MAX_IN_FLIGHT_PER_CONNECTION", streams
            ),
        )


@dataclass(frozen=True)
class HealthSettings:
    """The health/metrics HTTP listener and the database probe behind it."""

    host: str
    port: int
    probe_interval: float  # JACKPOT_HEALTH_INTERVAL
    probe_timeout: float
    failure_threshold: int
    on_demand_interval: float  # ?audit=now and ?period= reads share one run this long

    @classmethod
    def from_env(cls, env: Env, *, closed: bool) -> HealthSettings:
        return cls(
            host=env.get("HEALTH_HOST") or ("0.0.0.0" if closed else LOOPBACK),
            port=read_int(env, "HEALTH_PORT", 3001),
            probe_interval=read_float(env, "JACKPOT_HEALTH_INTERVAL", 0.5),
            probe_timeout=read_float(env, "JACKPOT_HEALTH_TIMEOUT", 1.0),
            failure_threshold=read_int(env, "JACKPOT_HEALTH_FAILURES", 3),
            on_demand_interval=read_float(env, "JACKPOT_ON_DEMAND_INTERVAL", 10.0),
        )


@dataclass(frozen=True)
class HttpSettings:
    """Bounds on both HTTP listeners, the gateway's and the health port's."""

    max_connections: int
    keepalive_timeout: float
    body_timeout: float

    @classmethod
    def from_env(cls, env: Env) -> HttpSettings:
        return cls(
            max_connections=read_int(env, "HTTP_MAX_CONNECTIONS", 256),
            keepalive_timeout=read_float(env, "HTTP_KEEPALIVE_TIMEOUT", 5.0),
            body_timeout=read_float(env, "HTTP_BODY_TIMEOUT", 10.0),
        )


@dataclass(frozen=True)
class GatewaySettings:
    """The REST gateway sidecar."""

    host: str  # REST_HOST
    port: int  # REST_PORT
    max_body_bytes: int
    # The gateway's own token (a client with the gateway role): vouches for its callers'
    # addresses from wherever it connects.
    token: str | None
    # The longest deadline the gateway gives a call; a Grpc-Timeout header asks for less.
    max_timeout: float
    # JACKPOT_METRICS_URL: where GET /api/jackpot/metrics reads the server's figures (None:
    # the health port of a server on this host, gateway/metrics_proxy.py).
    metrics_url: str | None

    @classmethod
    def from_env(cls, env: Env, *, closed: bool) -> GatewaySettings:
        return cls(
            host=env.get("REST_HOST") or ("0.0.0.0" if closed else LOOPBACK),
            port=read_int(env, "REST_PORT", 3000),
            max_body_bytes=read_int(env, "REST_MAX_BODY_BYTES", 1 << 20),
            token=env.get("JACKPOT_GATEWAY_TOKEN") or None,
            max_timeout=read_float(env, "JACKPOT_GATEWAY_MAX_TIMEOUT", 30.0),
            metrics_url=env.get("JACKPOT_METRICS_URL", "").strip() or None,
        )


@dataclass(frozen=True)
class AuthSettings:
    """Who may call (docs/SECURITY.md): the clients, the tokens, the failure throttle."""

    admin_token: str | None
    clients_file: Path | None
    allow_open: bool
    client_token: str | None  # JACKPOT_TOKEN: what our own commands send
    failure_limit: int
    failure_window: float
    block_seconds: float
    # Whose X-Forwarded-For is believed (the server's gateway, the gateway's load balancer).
    trusted_proxies: TrustedProxies

    @property
    def open_mode(self) -> bool:
        """No clients configured: every caller is let in (development only)."""
        return self.admin_token is None and self.clients_file is None

    @classmethod
    def from_env(cls, env: Env) -> AuthSettings:
        return cls(
            admin_token=env.get("JACKPOT_ADMIN_TOKEN") or None,
            clients_file=read_path(env, "JACKPOT_CLIENTS_FILE"),
            allow_open=read_flag(env, "JACKPOT_ALLOW_OPEN", False),
            client_token=env.get("JACKPOT_TOKEN") or None,
            failure_limit=read_int(env, "JACKPOT_AUTH_FAILURE_LIMIT", 20),
            failure_window=read_float(env, "JACKPOT_AUTH_FAILURE_WINDOW", 60.0),
            block_seconds=read_float(env, "JACKPOT_AUTH_BLOCK_SECONDS", 30.0),
            trusted_proxies=read_trusted_proxies(env, "JACKPOT_TRUSTED_PROXIES"),
        )


@dataclass(frozen=True)
class TlsSettings:
    """PEM files: the server's (GRPC_TLS_CERT/KEY, CLIENT_CA for mTLS) and our clients'."""

    cert_file: Path | None
    key_file: Path | None
    ca_file: Path | None
    client_ca_file: Path | None
    client_cert_file: Path | None
    client_key_file: Path | None

    @classmethod
    def from_env(cls, env: Env) -> TlsSettings:
        return cls(
            cert_file=read_path(env, "GRPC_TLS_CERT"),
            key_file=read_path(env, "GRPC_TLS_KEY"),
            ca_file=read_path(env, "GRPC_TLS_CA"),
            client_ca_file=read_path(env, "GRPC_TLS_CLIENT_CA"),
            client_cert_file=read_path(env, "GRPC_TLS_CLIENT_CERT"),
            client_key_file=read_path(env, "GRPC_TLS_CLIENT_KEY"),
        )


@dataclass(frozen=True)
class ServiceSettings:
    """The jackpot service's own bounds: the largest wager (minor units), the bound on the
    three rates' sum, and how stale a read of other processes' writes may be."""

    max_wager: int
    max_rate_sum: Decimal
    snapshot_ttl: float

    @classmethod
    def from_env(cls, env: Env) -> ServiceSettings:
        return cls(
            max_wager=read_bounded_int(env, "JACKPOT_MAX_WAGER", MAX_WAGER_AMOUNT, 1, INT64_MAX),
            max_rate_sum=read_rate_bound(env, "JACKPOT_MAX_RATE_SUM", MAX_RATE_SUM),
            snapshot_ttl=read_float(env, "JACKPOT_SNAPSHOT_TTL", 0.5),
        )


@dataclass(frozen=True)
class AuditSettings:
    """The background ledger audit."""

    interval: float
    # Every Nth background audit re-proves every row; the others only the rows since the
    # last clean one (JACKPOT_AUDIT_FULL_EVERY).
    full_every: int

    @classmethod
    def from_env(cls, env: Env) -> AuditSettings:
        return cls(
            interval=read_float(env, "JACKPOT_AUDIT_INTERVAL", 300.0),
            full_every=read_int(env, "JACKPOT_AUDIT_FULL_EVERY", 12),
        )


@dataclass(frozen=True)
class HistorySettings:
    """The metrics history (system_metrics and its rollups)."""

    sample_interval: float  # JACKPOT_SAMPLE_INTERVAL
    retention_days: float

    @classmethod
    def from_env(cls, env: Env) -> HistorySettings:
        return cls(
            sample_interval=read_float(env, "JACKPOT_SAMPLE_INTERVAL", 60.0),
            retention_days=read_float(env, "JACKPOT_METRICS_RETENTION_DAYS", 35.0),
        )


@dataclass(frozen=True)
class LedgerSettings:
    """The tamper-evident ledger (docs/LEDGER.md): the checkpoint signing key, the file the
    signed checkpoints are appended to, and how often the server signs one."""

    key_file: Path | None
    checkpoint_log: Path | None
    checkpoint_interval: float

    @classmethod
    def from_env(cls, env: Env) -> LedgerSettings:
        return cls(
            key_file=read_path(env, "JACKPOT_LEDGER_KEY_FILE"),
            checkpoint_log=read_path(env, "JACKPOT_CHECKPOINT_LOG"),
            checkpoint_interval=read_float(env, "JACKPOT_CHECKPOINT_INTERVAL", 10.0),
        )


@dataclass(frozen=True)
class WatchSettings:
    """WatchPools (docs/OPERATIONS.md, "Watching the watchers"): at most one pool update
    per interval; watchers per server process and per connection; a stream whose reader
    takes no message for max_lag is cut off (WATCHER_TOO_SLOW)."""

    interval: float
    max_watchers: int
    max_per_connection: int
    max_lag: float

    @classmethod
    def from_env(cls, env: Env) -> WatchSettings:
        return cls(
            interval=read_float(env, "JACKPOT_WATCH_INTERVAL", 0.1),
            max_watchers=read_int(env, "JACKPOT_WATCH_MAX", 10_000),
            max_per_connection=read_int(env, "JACKPOT_WATCH_MAX_PER_CONNECTION", 100),
            max_lag=read_float(env, "JACKPOT_WATCH_MAX_LAG", 10.0),
        )


@dataclass(frozen=True)
class ProcessSettings:
    """What every long-lived process shares: its event loop, its logs, how it stops."""

    event_loop: str
    log_dir: Path
    log_format: str  # JACKPOT_LOG_FORMAT: text or json (one JSON object a line)
    shutdown_grace: float
    drain_delay: float

    @classmethod
    def from_env(cls, env: Env) -> ProcessSettings:
        return cls(
            event_loop=read_choice(env, "JACKPOT_EVENT_LOOP", "uvloop", ("uvloop", "asyncio")),
            log_dir=read_dir(env, "JACKPOT_LOG_DIR", "logs"),
            log_format=log_format_of(env),
            shutdown_grace=shutdown_grace_of(env),
            drain_delay=read_float(env, "JACKPOT_DRAIN_DELAY", 1.0),
        )
