"""A PostgreSQL of a test's own that speaks German (lc_messages = de_DE.UTF-8).

Debian's PostgreSQL 15 (built with NLS, its German catalogue installed) is started from
initdb in a temporary directory, with the de_DE.UTF-8 locale compiled there by localedef
(LOCPATH: nothing is installed on the machine). Its messages, warnings included, come in
German, as a localized production server's would. Missing pieces skip the test (fail under
CI=true)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from testkit.ports import free_port
from testkit.tools import require, require_tool

PG_BIN = Path("/usr/lib/postgresql/15/bin")
CATALOGUE = Path("/usr/share/locale/de/LC_MESSAGES/postgres-15.mo")
LOCALE_SOURCE = Path("/usr/share/i18n/locales/de_DE")
LOCALE = "de_DE.UTF-8"


class GermanPostgres:
    def __init__(self, base: Path, port: int, run_as: str | None) -> None:
        self.base, self.port, self.run_as = base, port, run_as
        self.data_dir = base / "data"
        self.admin_url = make_conninfo(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=5
        )

    @property
    def log(self) -> str:
        path = self.base / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _run(self, *args: str, env: dict[str, str] | None = None) -> None:
        command = list(args)
        if self.run_as is not None:
            command = [
                "setpriv",
                f"--reuid={self.run_as}",
                f"--regid={self.run_as}",
                "--init-groups",
                *command,
            ]
        subprocess.run(command, check=True, capture_output=True, timeout=120, env=env)

    def set_system(self, name: str, value: str | None) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            if value is None:
                conn.execute(f"ALTER SYSTEM RESET {name}")
            else:
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.3)  # the reload reaches every backend before its next command


@contextlib.contextmanager
def german_postgres() -> Iterator[GermanPostgres]:
    require((PG_BIN / "initdb").exists(), f"PostgreSQL 15 is not installed in {PG_BIN}")
    require(CATALOGUE.exists(), f"PostgreSQL's German messages are missing ({CATALOGUE})")
    require(LOCALE_SOURCE.exists(), f"the de_DE locale source is missing ({LOCALE_SOURCE})")
    localedef = require_tool("localedef", "apt-get install locales")
    run_as = "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="jackpot-german-pg-"))
    server = GermanPostgres(base, free_port(), run_as)
    started = False
    try:
        locales = base / "locales"
        locales.mkdir()
        subprocess.run(
            [localedef, "-i", "de_DE", "-f", "UTF-8", str(locales / LOCALE)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        if run_as is not None:
            user = pwd.getpwnam(run_as)
            for root, dirs, files in os.walk(base):
                for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                    os.chown(name, user.pw_uid, user.pw_gid)
        server._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(server.data_dir),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--locale=C",
            "-E",
            "UTF8",
        )
        options = (
            f"-p {server.port} -k {base} -c listen_addresses=127.0.0.1 -c lc_messages={LOCALE}"
        )
        env = dict(os.environ, LOCPATH=str(locales))
        server._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(server.data_dir),
            "-o",
            options,
            "-l",
            str(base / "postgres.log"),
            "-w",
            "start",
            env=env,
        )
        started = True
        yield server
    finally:
        if started:
            with contextlib.suppress(Exception):
                server._run(
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(server.data_dir),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                )
        shutil.rmtree(base, ignore_errors=True)
