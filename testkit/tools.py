"""What a test needs from the machine (a tool, an extension, a TCP server): skipped where it
is missing on a developer's machine, a failure under CI=true, where CI promised it
(.ci/run installs it) and a skip would report green for a mode that never ran."""

from __future__ import annotations

import os
import shutil

import pytest
from psycopg.conninfo import conninfo_to_dict

# Debian installs daemons (pgbouncer) outside a normal user's PATH.
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(present: bool, missing: str) -> None:
    """Go on when `present`; else skip the test, or fail it under CI=true."""
    if present:
        return
    if in_ci():
        pytest.fail(f"{missing} (CI=true: CI must provide it, not skip)", pytrace=False)
    pytest.skip(missing)


def find_tool(name: str) -> str | None:
    """The path of the executable `name` on PATH or in the sbin directories, or None."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


def require_tool(name: str, install: str = "") -> str:
    """The path of the executable `name`; skipped (failed under CI=true) when missing.
    `install` says how to get it."""
    path = find_tool(name)
    require(path is not None, f"{name} is not installed" + (f" ({install})" if install else ""))
    assert path is not None
    return path


def require_tcp_server(url: str) -> tuple[str, int]:
    """(host, port) of the PostgreSQL at `url`, which must listen on TCP: the embedded server
    listens on a unix socket only (tests needing TCP are marked `system_postgres`, and CI's
    embedded run deselects them)."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "")
    require(
        bool(host) and not host.startswith("/"),
        "needs a TCP PostgreSQL (JACKPOT_TEST_DATABASE=system), not a unix socket",
    )
    return host, int(params.get("port") or 5432)
