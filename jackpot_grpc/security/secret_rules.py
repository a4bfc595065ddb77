"""What a secret must be like for the service to accept it.

Tokens (JACKPOT_ADMIN_TOKEN, JACKPOT_TOKEN, client tokens) have at least MIN_TOKEN_LENGTH
characters: a short one can be guessed, and the clients file's SHA-256 of it is fast to
test. Ours (`jackpot clients add`) have 47; for the admin token use `openssl rand -hex 32`.

Secret files (the clients file, TLS private keys) must be private to the service.
Allowed: no access at all for others, and no write for the group: 0600, or 0640 / 0440
so that a group the service runs in (a Kubernetes fsGroup, a `jackpot` group) may read
a file another user owns. A file others may read leaks secrets; one the group or others
may write lets them add themselves as a client or swap the key.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from jackpot_grpc.config_error import ConfigError

if TYPE_CHECKING:
    from jackpot_grpc.config import Settings

MIN_TOKEN_LENGTH = 32
TOO_OPEN = stat.S_IWGRP | stat.S_IRWXO  # 0o027


def require_long_token(setting: str, token: str | None) -> None:
    """Refuse a token shorter than MIN_TOKEN_LENGTH (it is never shown)."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{setting} has {len(token)} characters: a token needs at least {MIN_TOKEN_LENGTH};"
            " make one with `openssl rand -hex 32`"
        )


def loose_mode(path: Path, what: str) -> str | None:
    """Why `path` is too open for a secret, or None if it is private enough (or absent:
    whoever reads it reports that)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    if not mode & TOO_OPEN:
        return None
    return (
        f"{what} {path} has mode {mode:04o}: others may read or write it, or its group may"
        f" write it; run `chmod 0600 {path}` (or 0640 to let the service's group read it)"
    )


def require_private(path: Path, what: str) -> None:
    """Refuse to start with a secret file others may read or write."""
    problem = loose_mode(path, what)
    if problem is not None:
        raise ConfigError(problem)


def check_server_secrets(settings: Settings) -> None:
    """At start: the admin token long enough, the TLS key private (the clients file is
    checked where it is read, client_registry.py, at start and at every reload)."""
    require_long_token("JACKPOT_ADMIN_TOKEN", settings.auth.admin_token)
    if settings.tls.key_file is not None:
        require_private(settings.tls.key_file, "GRPC_TLS_KEY")
