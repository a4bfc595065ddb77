"""Settings, read once from the environment into a frozen value passed to whoever needs it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BACKUP_DIR = Path("/var/backups/jackpot")


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None


def _flag(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "on", "true", "yes"):
        return True
    if raw in ("0", "off", "false", "no"):
        return False
    raise SystemExit(f"{name} must be on or off, got {raw!r}")


def _choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in choices:
        raise SystemExit(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _path(env: dict[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw) if raw else None


def log_dir_from_env(environ: dict[str, str] | None = None) -> Path:
    """JACKPOT_LOG_DIR: read on its own, so logging is set up before any other setting can
    fail (a bad one is then logged to application.log like every other start failure)."""
    env = os.environ if environ is None else environ
    return Path(env.get("JACKPOT_LOG_DIR") or PROJECT_ROOT / "logs")


@dataclass(frozen=True)
class Settings:
    database_url: str | None
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
    # Every server connection's lock_timeout and statement_timeout (seconds; 0: the
    # server's or the role's own): a call never waits on a lock or a query past them.
    db_lock_timeout: float
    db_statement_timeout: float
    batching: bool
    event_loop: str
    batch_max_size: int
    batch_linger: float
    queue_max_size: int
    snapshot_ttl: float
    shutdown_grace: float
    drain_delay: float
    health_probe_interval: float
    audit_interval: float
    admin_token: str | None
    tls_cert_file: Path | None
    tls_key_file: Path | None
    tls_ca_file: Path | None
    max_body_bytes: int
    metrics_sample_interval: float
    metrics_retention_days: float
    log_dir: Path
    # One backup root for `jackpot backup create|prune` and the backup timer.
    backup_dir: Path

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            data_dir=Path(env.get("JACKPOT_DATA_DIR") or PROJECT_ROOT / ".data" / "postgres"),
            grpc_host=env.get("GRPC_HOST", "[::]"),
            grpc_port=_int(env, "GRPC_PORT", 50051),
            reuse_port=_flag(env, "JACKPOT_REUSE_PORT", False),
            health_host=env.get("HEALTH_HOST", "0.0.0.0"),
            health_port=_int(env, "HEALTH_PORT", 3001),
            rest_host=env.get("REST_HOST", "0.0.0.0"),
            rest_port=_int(env, "REST_PORT", 3000),
            # The gateway's default target is this machine's gRPC port, so `jackpot run`
            # with a GRPC_PORT of its own still wires the two together.
            grpc_target=env.get("JACKPOT_GRPC_TARGET")
            or f"localhost:{_int(env, 'GRPC_PORT', 50051)}",
            pool_min_size=_int(env, "DB_POOL_MIN", 2),
            pool_max_size=_int(env, "DB_POOL_MAX", 10),
            pool_timeout=_float(env, "DB_POOL_TIMEOUT", 2.0),
            pool_max_waiting=_int(env, "DB_POOL_MAX_WAITING", 64),
            db_lock_timeout=_float(env, "DB_LOCK_TIMEOUT", 2.0),
            db_statement_timeout=_float(env, "DB_STATEMENT_TIMEOUT", 5.0),
            batching=_flag(env, "JACKPOT_BATCHING", True),
            event_loop=_choice(env, "JACKPOT_EVENT_LOOP", "uvloop", ("uvloop", "asyncio")),
            batch_max_size=_int(env, "JACKPOT_BATCH_MAX", 512),
            batch_linger=_float(env, "JACKPOT_BATCH_LINGER", 0.002),
            queue_max_size=_int(env, "JACKPOT_QUEUE_MAX", 8192),
            snapshot_ttl=_float(env, "JACKPOT_SNAPSHOT_TTL", 0.5),
            shutdown_grace=_float(env, "JACKPOT_SHUTDOWN_GRACE", 10.0),
            drain_delay=_float(env, "JACKPOT_DRAIN_DELAY", 1.0),
            health_probe_interval=_float(env, "JACKPOT_HEALTH_INTERVAL", 0.5),
            audit_interval=_float(env, "JACKPOT_AUDIT_INTERVAL", 300.0),
            admin_token=env.get("JACKPOT_ADMIN_TOKEN") or None,
            tls_cert_file=_path(env, "GRPC_TLS_CERT"),
            tls_key_file=_path(env, "GRPC_TLS_KEY"),
            tls_ca_file=_path(env, "GRPC_TLS_CA"),
            max_body_bytes=_int(env, "REST_MAX_BODY_BYTES", 1 << 20),
            metrics_sample_interval=_float(env, "JACKPOT_SAMPLE_INTERVAL", 60.0),
            metrics_retention_days=_float(env, "JACKPOT_METRICS_RETENTION_DAYS", 35.0),
            log_dir=log_dir_from_env(env),
            backup_dir=Path(env.get("JACKPOT_BACKUP_DIR") or DEFAULT_BACKUP_DIR),
        )
