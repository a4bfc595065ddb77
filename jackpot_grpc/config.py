"""Settings, read once from the environment into a frozen value passed to whoever needs it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.domain.rules import INT64_MAX
from jackpot_grpc.domain.validation import MAX_RATE_SUM, MAX_WAGER_AMOUNT
from jackpot_grpc.transport.peer_address import (
    DEFAULT_TRUSTED_PROXIES,
    LOOPBACK_PROXIES,
    TrustedProxies,
)

# The source checkout, for tests and developer tools only. Nothing the service runs reads
# it: an installed wheel has no checkout, so run-time paths come from the settings below.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
LOG_FORMATS = ("text", "json")


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _bounded_int(env: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    value = _int(env, name, default)
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _rate_bound(env: dict[str, str], name: str, default: Decimal) -> Decimal:
    """An exact decimal in (0, 1]: the most the three contribution rates may sum to."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ConfigError(f"{name} must be a decimal number, got {raw!r}") from None
    if not (value.is_finite() and 0 < value <= 1):
        raise ConfigError(f"{name} must be a decimal above 0 and at most 1, got {raw!r}")
    return value


def _flag(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "on", "true", "yes"):
        return True
    if raw in ("0", "off", "false", "no"):
        return False
    raise ConfigError(f"{name} must be on or off, got {raw!r}")


def _choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _trusted_proxies(env: dict[str, str], name: str) -> TrustedProxies:
    raw = env.get(name, "").strip() or DEFAULT_TRUSTED_PROXIES
    try:
        return TrustedProxies.parse(raw)
    except ValueError as exc:
        raise ConfigError(
            f"{name} must list addresses or CIDRs separated by commas (or none): {exc}"
        ) from None


def _path(env: dict[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw) if raw else None


def _dir(env: dict[str, str], name: str, default: str) -> Path:
    """A directory the service writes: the setting, else `default` under the current
    directory (where `make` runs; units and images set the variable to a real place)."""
    return (_path(env, name) or Path(default)).absolute()


def log_dir_from_env(environ: dict[str, str] | None = None) -> Path:
    """JACKPOT_LOG_DIR: read on its own, so logging is set up before any other setting can
    fail (a bad one is then logged to application.log like every other start failure)."""
    return _dir(dict(os.environ if environ is None else environ), "JACKPOT_LOG_DIR", "logs")


def log_format_from_env(environ: dict[str, str] | None = None) -> str:
    """JACKPOT_LOG_FORMAT (text or json), read on its own for the same reason."""
    env = dict(os.environ if environ is None else environ)
    return _choice(env, "JACKPOT_LOG_FORMAT", "text", LOG_FORMATS)


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    embedded_db: bool
    migrate_on_start: bool
    data_dir: Path
    grpc_host: str
    grpc_port: int
    reuse_port: bool
    health_host: str
    health_port: int
    rest_host: str
    rest_port: int
    grpc_target: str
    pool_min_size: int
    pool_max_size: int
    pool_timeout: float
    pool_max_waiting: int
    pgbouncer: bool  # DB_PGBOUNCER: the pool talks to PgBouncer in transaction mode
    # Every server connection's lock_timeout and statement_timeout (seconds; 0: the
    # server's or the role's own): a call never waits on a lock or a query past them.
    db_lock_timeout: float
    db_statement_timeout: float
    batching: bool
    # Where a group-commit batch runs: "thread" (its own thread and blocking connection)
    # or "loop" (the event loop, on the pool).
    batch_executor: str
    event_loop: str
    batch_max_size: int
    batch_linger: float
    queue_max_size: int
    snapshot_ttl: float
    shutdown_grace: float
    drain_delay: float
    health_probe_interval: float
    audit_interval: float
    # Every Nth background audit re-proves every row; the others only the rows since the
    # last clean one (JACKPOT_AUDIT_FULL_EVERY).
    audit_full_every: int
    admin_token: str | None
    # The largest wager accepted (minor units) and the bound on the three rates' sum.
    max_wager: int
    max_rate_sum: Decimal
    clients_file: Path | None
    allow_open: bool
    client_token: str | None
    auth_failure_limit: int
    auth_failure_window: float
    auth_block_seconds: float
    tls_cert_file: Path | None
    tls_key_file: Path | None
    tls_ca_file: Path | None
    tls_client_ca_file: Path | None
    tls_client_cert_file: Path | None
    tls_client_key_file: Path | None
    max_body_bytes: int
    metrics_sample_interval: float
    metrics_retention_days: float
    log_dir: Path
    backup_dir: Path
    # Hostile traffic (docs/RELIABILITY.md): probe, on-demand reads, gRPC and HTTP bounds.
    health_probe_timeout: float
    health_failure_threshold: int
    on_demand_interval: float
    side_pool_max_size: int
    side_statement_timeout: float
    max_in_flight: int
    max_in_flight_per_connection: int
    grpc_max_streams_per_connection: int
    grpc_max_pending_calls: int | None
    grpc_keepalive_time: float
    grpc_keepalive_timeout: float
    grpc_min_ping_interval: float
    grpc_max_connection_age: float
    grpc_max_connection_age_grace: float
    http_max_connections: int
    http_keepalive_timeout: float
    http_body_timeout: float
    # The tamper-evident ledger (docs/LEDGER.md): the checkpoint signing key, the file the
    # signed checkpoints are appended to, and how often the server signs one.
    ledger_key_file: Path | None = None
    checkpoint_log: Path | None = None
    checkpoint_interval: float = 10.0

    @property
    def open_mode(self) -> bool:
        """No clients configured: every caller is let in (development only)."""
        return self.admin_token is None and self.clients_file is None

    # Whose X-Forwarded-For is believed (the server's gateway, the gateway's load balancer).
    trusted_proxies: TrustedProxies = LOOPBACK_PROXIES
    # The gateway's own token (a client with the gateway role): vouches for its callers'
    # addresses from wherever it connects.
    gateway_token: str | None = None
    log_format: str = "text"  # JACKPOT_LOG_FORMAT: text or json (one JSON object a line)
    # The longest deadline the gateway gives a call; a Grpc-Timeout header asks for less.
    gateway_max_timeout: float = 30.0
    # WatchPools (docs/OPERATIONS.md, "Watching the watchers"): at most one pool update per
    # interval; watchers per server process and per connection.
    watch_interval: float = 0.1
    watch_max_watchers: int = 10_000
    watch_max_per_connection: int = 100
    # A stream whose reader takes no message for this long is cut off (WATCHER_TOO_SLOW).
    watch_max_lag: float = 10.0
    # Database failover (docs/DEPLOY.md, "Replication and failover"): the longest wait for
    # a COMMIT's answer before the connection is closed and the callers told
    # COMMIT_OUTCOME_UNKNOWN (0: no bound); the age past which a batch still in flight turns
    # readiness NOT_SERVING; libpq's connect_timeout, which applies per host of a multi-host
    # DSN (a connect_timeout in DATABASE_URL wins).
    # The age limit is never below the commit timeout (refused at start): a batch may wait
    # for its COMMIT that long and still succeed, and must not flap readiness meanwhile.
    commit_timeout: float = 5.0
    batch_age_limit: float = 6.0
    db_connect_timeout: float = 2.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        admin_token = env.get("JACKPOT_ADMIN_TOKEN") or None
        clients_file = _path(env, "JACKPOT_CLIENTS_FILE")
        # With no clients configured the service runs open, so by default it listens on
        # this machine only; listening elsewhere while open is refused at start
        # (jackpot_grpc.security.open_mode) unless JACKPOT_ALLOW_OPEN=1.
        closed = admin_token is not None or clients_file is not None
        streams = _int(env, "GRPC_MAX_STREAMS_PER_CONNECTION", 1024)
        everywhere_v6, everywhere_v4 = ("[::]", "0.0.0.0") if closed else (LOOPBACK, LOOPBACK)
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            # No DATABASE_URL: refuse, unless a throwaway embedded server is asked for.
            embedded_db=_flag(env, "JACKPOT_EMBEDDED_DB", False),
            migrate_on_start=_flag(env, "JACKPOT_MIGRATE_ON_START", False),
            data_dir=_dir(env, "JACKPOT_DATA_DIR", ".data/postgres"),
            grpc_host=env.get("GRPC_HOST") or everywhere_v6,
            grpc_port=_int(env, "GRPC_PORT", 50051),
            reuse_port=_flag(env, "JACKPOT_REUSE_PORT", False),
            health_host=env.get("HEALTH_HOST") or everywhere_v4,
            health_port=_int(env, "HEALTH_PORT", 3001),
            rest_host=env.get("REST_HOST") or everywhere_v4,
            rest_port=_int(env, "REST_PORT", 3000),
            # The gateway's default target is this machine's gRPC port, so `jackpot run`
            # with a GRPC_PORT of its own still wires the two together.
            grpc_target=env.get("JACKPOT_GRPC_TARGET")
            or f"localhost:{_int(env, 'GRPC_PORT', 50051)}",
            pool_min_size=_int(env, "DB_POOL_MIN", 2),
            pool_max_size=_int(env, "DB_POOL_MAX", 10),
            pool_timeout=_float(env, "DB_POOL_TIMEOUT", 2.0),
            pool_max_waiting=_int(env, "DB_POOL_MAX_WAITING", 64),
            pgbouncer=_flag(env, "DB_PGBOUNCER", False),
            db_lock_timeout=_float(env, "DB_LOCK_TIMEOUT", 2.0),
            db_statement_timeout=_float(env, "DB_STATEMENT_TIMEOUT", 5.0),
            batching=_flag(env, "JACKPOT_BATCHING", True),
            batch_executor=_choice(env, "JACKPOT_BATCH_EXECUTOR", "thread", ("thread", "loop")),
            event_loop=_choice(env, "JACKPOT_EVENT_LOOP", "uvloop", ("uvloop", "asyncio")),
            batch_max_size=_int(env, "JACKPOT_BATCH_MAX", 512),
            batch_linger=_float(env, "JACKPOT_BATCH_LINGER", 0.002),
            queue_max_size=_int(env, "JACKPOT_QUEUE_MAX", 8192),
            snapshot_ttl=_float(env, "JACKPOT_SNAPSHOT_TTL", 0.5),
            shutdown_grace=_float(env, "JACKPOT_SHUTDOWN_GRACE", 10.0),
            drain_delay=_float(env, "JACKPOT_DRAIN_DELAY", 1.0),
            health_probe_interval=_float(env, "JACKPOT_HEALTH_INTERVAL", 0.5),
            audit_interval=_float(env, "JACKPOT_AUDIT_INTERVAL", 300.0),
            audit_full_every=_int(env, "JACKPOT_AUDIT_FULL_EVERY", 12),
            admin_token=admin_token,
            clients_file=clients_file,
            allow_open=_flag(env, "JACKPOT_ALLOW_OPEN", False),
            client_token=env.get("JACKPOT_TOKEN") or None,
            auth_failure_limit=_int(env, "JACKPOT_AUTH_FAILURE_LIMIT", 20),
            auth_failure_window=_float(env, "JACKPOT_AUTH_FAILURE_WINDOW", 60.0),
            auth_block_seconds=_float(env, "JACKPOT_AUTH_BLOCK_SECONDS", 30.0),
            max_wager=_bounded_int(env, "JACKPOT_MAX_WAGER", MAX_WAGER_AMOUNT, 1, INT64_MAX),
            max_rate_sum=_rate_bound(env, "JACKPOT_MAX_RATE_SUM", MAX_RATE_SUM),
            tls_cert_file=_path(env, "GRPC_TLS_CERT"),
            tls_key_file=_path(env, "GRPC_TLS_KEY"),
            tls_ca_file=_path(env, "GRPC_TLS_CA"),
            tls_client_ca_file=_path(env, "GRPC_TLS_CLIENT_CA"),
            tls_client_cert_file=_path(env, "GRPC_TLS_CLIENT_CERT"),
            tls_client_key_file=_path(env, "GRPC_TLS_CLIENT_KEY"),
            max_body_bytes=_int(env, "REST_MAX_BODY_BYTES", 1 << 20),
            metrics_sample_interval=_float(env, "JACKPOT_SAMPLE_INTERVAL", 60.0),
            metrics_retention_days=_float(env, "JACKPOT_METRICS_RETENTION_DAYS", 35.0),
            log_dir=log_dir_from_env(env),
            backup_dir=_dir(env, "JACKPOT_BACKUP_DIR", "backups"),
            health_probe_timeout=_float(env, "JACKPOT_HEALTH_TIMEOUT", 1.0),
            health_failure_threshold=_int(env, "JACKPOT_HEALTH_FAILURES", 3),
            on_demand_interval=_float(env, "JACKPOT_ON_DEMAND_INTERVAL", 10.0),
            side_pool_max_size=_int(env, "JACKPOT_SIDE_POOL_MAX", 2),
            side_statement_timeout=_float(env, "JACKPOT_SIDE_STATEMENT_TIMEOUT", 30.0),
            max_in_flight=_int(env, "JACKPOT_MAX_IN_FLIGHT", 512),
            # Default: the streams a connection may open, so by default only the total binds
            # (one busy backend connection is not refused for its own burst); set lower to
            # cap what one connection may hold.
            max_in_flight_per_connection=_int(env, "JACKPOT_MAX_IN_FLIGHT_PER_CONNECTION", streams),
            grpc_max_streams_per_connection=streams,
            # Unset: gRPC core's own (drops at random from 1,000 waiting, all from 3,000).
            grpc_max_pending_calls=_int(env, "GRPC_MAX_PENDING_CALLS", 0) or None,
            grpc_keepalive_time=_float(env, "GRPC_KEEPALIVE_TIME", 60.0),
            grpc_keepalive_timeout=_float(env, "GRPC_KEEPALIVE_TIMEOUT", 20.0),
            grpc_min_ping_interval=_float(env, "GRPC_MIN_PING_INTERVAL", 10.0),
            grpc_max_connection_age=_float(env, "GRPC_MAX_CONNECTION_AGE", 300.0),
            # Default: the shutdown grace, so a call in flight when its connection ages
            # out has as long to finish as it would on shutdown.
            grpc_max_connection_age_grace=_float(
                env, "GRPC_MAX_CONNECTION_AGE_GRACE", _float(env, "JACKPOT_SHUTDOWN_GRACE", 10.0)
            ),
            http_max_connections=_int(env, "HTTP_MAX_CONNECTIONS", 256),
            http_keepalive_timeout=_float(env, "HTTP_KEEPALIVE_TIMEOUT", 5.0),
            http_body_timeout=_float(env, "HTTP_BODY_TIMEOUT", 10.0),
            trusted_proxies=_trusted_proxies(env, "JACKPOT_TRUSTED_PROXIES"),
            gateway_token=env.get("JACKPOT_GATEWAY_TOKEN") or None,
            log_format=log_format_from_env(env),
            gateway_max_timeout=_float(env, "JACKPOT_GATEWAY_MAX_TIMEOUT", 30.0),
            watch_interval=_float(env, "JACKPOT_WATCH_INTERVAL", 0.1),
            watch_max_watchers=_int(env, "JACKPOT_WATCH_MAX", 10_000),
            watch_max_per_connection=_int(env, "JACKPOT_WATCH_MAX_PER_CONNECTION", 100),
            watch_max_lag=_float(env, "JACKPOT_WATCH_MAX_LAG", 10.0),
            ledger_key_file=_path(env, "JACKPOT_LEDGER_KEY_FILE"),
            checkpoint_log=_path(env, "JACKPOT_CHECKPOINT_LOG"),
            checkpoint_interval=_float(env, "JACKPOT_CHECKPOINT_INTERVAL", 10.0),
            commit_timeout=_float(env, "JACKPOT_COMMIT_TIMEOUT", 5.0),
            batch_age_limit=_float(env, "JACKPOT_BATCH_AGE_LIMIT", 6.0),
            db_connect_timeout=_float(env, "DB_CONNECT_TIMEOUT", 2.0),
        ).checked()

    def checked(self) -> Settings:
        """Settings that contradict each other stop the start."""
        if 0 < self.batch_age_limit < self.commit_timeout:
            raise ConfigError(
                f"JACKPOT_BATCH_AGE_LIMIT ({self.batch_age_limit:g} s) must not be below"
                f" JACKPOT_COMMIT_TIMEOUT ({self.commit_timeout:g} s): a batch may wait that"
                " long for its commit and still succeed (0 turns the age limit off)"
            )
        return self
