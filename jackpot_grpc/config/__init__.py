"""Settings, read once from the environment into a frozen value passed to whoever needs it.

One group per component (config/groups.py: `settings.database`, `settings.grpc`,
`settings.tls`...), each read by its own loader beside it; a component is handed its group
where it needs no other. A bad value raises ConfigError naming the variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from jackpot_grpc.config.groups import (
    LOOPBACK,
    AuditSettings,
    AuthSettings,
    BatchSettings,
    DatabaseSettings,
    GatewaySettings,
    GrpcSettings,
    HealthSettings,
    HistorySettings,
    HttpSettings,
    LedgerSettings,
    ProcessSettings,
    ServiceSettings,
    TlsSettings,
    WatchSettings,
    log_format_of,
)
from jackpot_grpc.config.readers import read_dir
from jackpot_grpc.config_error import ConfigError


def log_dir_from_env(environ: dict[str, str] | None = None) -> Path:
    """JACKPOT_LOG_DIR: read on its own, so logging is set up before any other setting can
    fail (a bad one is then logged to application.log like every other start failure)."""
    return read_dir(dict(os.environ if environ is None else environ), "JACKPOT_LOG_DIR", "logs")


def log_format_from_env(environ: dict[str, str] | None = None) -> str:
    """JACKPOT_LOG_FORMAT (text or json), read on its own for the same reason."""
    return log_format_of(dict(os.environ if environ is None else environ))


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings
    batch: BatchSettings
    grpc: GrpcSettings
    health: HealthSettings
    http: HttpSettings
    gateway: GatewaySettings
    auth: AuthSettings
    tls: TlsSettings
    service: ServiceSettings
    audit: AuditSettings
    history: HistorySettings
    ledger: LedgerSettings
    watch: WatchSettings
    process: ProcessSettings

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        auth = AuthSettings.from_env(env)
        # With no clients configured the service runs open, so by default it listens on
        # this machine only; listening elsewhere while open is refused at start
        # (jackpot_grpc.security.open_mode) unless JACKPOT_ALLOW_OPEN=1.
        closed = not auth.open_mode
        return cls(
            database=DatabaseSettings.from_env(env),
            batch=BatchSettings.from_env(env),
            grpc=GrpcSettings.from_env(env, closed=closed),
            health=HealthSettings.from_env(env, closed=closed),
            http=HttpSettings.from_env(env),
            gateway=GatewaySettings.from_env(env, closed=closed),
            auth=auth,
            tls=TlsSettings.from_env(env),
            service=ServiceSettings.from_env(env),
            audit=AuditSettings.from_env(env),
            history=HistorySettings.from_env(env),
            ledger=LedgerSettings.from_env(env),
            watch=WatchSettings.from_env(env),
            process=ProcessSettings.from_env(env),
        ).checked()

    def checked(self) -> Settings:
        """Settings that contradict each other stop the start."""
        age_limit, commit_timeout = self.batch.age_limit, self.database.commit_timeout
        if 0 < age_limit < commit_timeout:
            raise ConfigError(
                f"JACKPOT_BATCH_AGE_LIMIT ({age_limit:g} s) must not be below"
                f" JACKPOT_COMMIT_TIMEOUT ({commit_timeout:g} s): a batch may wait that"
                " long for its commit and still succeed (0 turns the age limit off)"
            )
        return self


__all__ = [
    "LOOPBACK",
    "AuditSettings",
    "AuthSettings",
    "BatchSettings",
    "ConfigError",
    "DatabaseSettings",
    "GatewaySettings",
    "GrpcSettings",
    "HealthSettings",
    "HistorySettings",
    "HttpSettings",
    "LedgerSettings",
    "ProcessSettings",
    "ServiceSettings",
    "Settings",
    "TlsSettings",
    "WatchSettings",
    "log_dir_from_env",
    "log_format_from_env",
]
