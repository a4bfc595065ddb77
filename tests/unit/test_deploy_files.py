"""The deployment files, parsed: Dockerfile, .dockerignore, alert rules, process managers, docs.

No container engine or Prometheus runs here, so each file is read as its tool would read
it and checked for what the runbook asks of it. Every command the files and the operations
guide give is parsed by the real `jackpot` argument parser.
"""

from __future__ import annotations

import ast
import configparser
import fnmatch
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from jackpot_grpc.config import Settings
from jackpot_grpc.observability import logging_setup
from testkit.deploy_files import assert_parses, dockerfile_instructions, stages
from testkit.paths import PROJECT_ROOT
from testkit.tools import require_tool

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
ALERTS = PROJECT_ROOT / "deploy" / "prometheus" / "jackpot-alerts.yml"
OPERATIONS = PROJECT_ROOT / "docs" / "OPERATIONS.md"
# The operations runbook the service must satisfy, kept in the repo so CI reads it too.
RUNBOOK = PROJECT_ROOT / "docs" / "runbook" / "jackpot-service-runbook.md"
DURATION = re.compile(r"^\d+[smhdw]$")
README = PROJECT_ROOT / "README.md"
CONFIG = PROJECT_ROOT / "jackpot_grpc" / "config"  # Settings and its groups' loaders
ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")


# --- Dockerfile ----------------------------------------------------------------------------


def build_args() -> dict[str, str]:
    args = {}
    for name, rest in dockerfile_instructions():
        if name == "FROM":
            break
        if name == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value
    return args


def base_image() -> str:
    image = stages()[-1][0][1].split()[0]
    for key, value in build_args().items():
        image = image.replace(f"${{{key}}}", value)
    return image


def test_dockerfile_is_multi_stage_from_slim_python_pinned_by_digest() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    froms = [s[0][1] for s in all_stages]
    assert re.search(r"\bAS builder$", froms[0], re.IGNORECASE)
    assert {f.split()[0] for f in froms} == {"${PYTHON_IMAGE}"}, "every stage on one base"
    name, _, digest = base_image().partition("@")
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", name), name
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"base image not pinned: {digest!r}"


def test_dockerfile_builds_the_wheel_and_installs_it_with_the_runtime_lock() -> None:
    builder, final = stages()[0], stages()[-1]
    assert any(n == "RUN" and re.search(r"pip wheel --no-deps|-m build", r) for n, r in builder)
    installs = " ".join(r for n, r in final if n == "RUN" and "pip install" in r)
    assert "--require-hashes -r /build/requirements.lock" in installs
    assert re.search(r"pip install [^&]*--no-deps [^&]*\.whl", installs)
    everything = " ".join(r for _, r in dockerfile_instructions())
    for forbidden in ("--editable", "pip install -e", "[embedded]", "pixeltable", "[dev]"):
        assert forbidden not in everything, forbidden
    # The final stage carries no source tree: only what the wheel installed.
    assert not any(n == "COPY" and "jackpot_grpc" in r for n, r in final)


def declared_volumes() -> set[str]:
    volumes: set[str] = set()
    for name, rest in stages()[-1]:
        if name == "VOLUME":
            volumes.update(json.loads(rest) if rest.startswith("[") else rest.split())
    return volumes


def final_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for name, rest in stages()[-1]:
        if name == "ENV":
            for word in shlex.split(rest):
                variable, _, value = word.partition("=")
                env[variable] = value
    return env


def test_dockerfile_writes_only_to_declared_volumes() -> None:
    """Read-only root filesystem: every directory the service writes is a volume."""
    env = final_env()
    settings = Settings.from_env(env)
    assert {
        str(settings.process.log_dir),
        str(settings.database.backup_dir),
        "/tmp",
    } <= declared_volumes()
    workdirs = [r for n, r in stages()[-1] if n == "WORKDIR"]
    assert workdirs[-1] in declared_volumes(), "the working directory is not writable"
    # No throwaway database and no migration at start, whatever the image's environment.
    assert settings.database.url is None
    assert not settings.database.embedded and not settings.database.migrate_on_start


def test_dockerfile_runs_as_non_root_and_exposes_the_runbook_ports() -> None:
    final = stages()[-1]
    users = [rest for name, rest in final if name == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    exposed = {
        int(p.split("/")[0]) for name, rest in final if name == "EXPOSE" for p in rest.split()
    }
    assert exposed == {50051, 3000, 3001}
    env = final_env()
    defaults = Settings.from_env({})
    for var, port in (
        ("GRPC_PORT", defaults.grpc.port),
        ("REST_PORT", defaults.gateway.port),
        ("HEALTH_PORT", defaults.health.port),
    ):
        assert env[var] == str(port)
    assert re.fullmatch(r"\d+:\d+", users[-1]), "numeric USER (runAsNonRoot can check it)"


def test_dockerfile_health_checks_through_grpc_health_and_serves() -> None:
    final = stages()[-1]
    checks = [rest for name, rest in final if name == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    health = command.split("||")[0].replace("${GRPC_PORT}", "50051")
    args = assert_parses(health)
    assert args.command == "health" and args.grpc_only and args.grpc_target == "localhost:50051"

    cmds = [rest for name, rest in final if name == "CMD"]
    assert json.loads(cmds[-1]) == ["jackpot", "serve"]


def dockerignore_patterns() -> list[str]:
    lines = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def ignored(path: str) -> bool:
    return any(
        fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p)
        for p in dockerignore_patterns()
    )


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    for name, rest in dockerfile_instructions():
        if name != "COPY" or rest.startswith("--from"):
            continue
        *sources, _destination = rest.split()
        for source in sources:
            assert (PROJECT_ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not ignored(source), f"COPY {source}: excluded by .dockerignore"
    for heavy in (".venv", ".git", ".data", "tests", "backups", "logs"):
        assert ignored(heavy), f".dockerignore lets {heavy} into the build context"


# --- alert rules ---------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    assert isinstance(document, dict) and document["groups"]
    rules = []
    for group in document["groups"]:
        assert group["name"] and group["rules"]
        rules.extend(group["rules"])
    return rules


def headings_anchors(markdown: str) -> set[str]:
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 -]", "", title).replace(" ", "-"))
    return anchors


def test_every_alert_has_expr_for_and_severity() -> None:
    anchors = headings_anchors(OPERATIONS.read_text())
    names = set()
    for rule in alert_rules():
        assert re.fullmatch(r"Jackpot[A-Z]\w+", rule["alert"]), rule
        assert rule["alert"] not in names, f"duplicate alert {rule['alert']}"
        names.add(rule["alert"])
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        assert DURATION.match(str(rule["for"])), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        link = rule["annotations"]["runbook_url"]
        assert link.startswith("docs/OPERATIONS.md#")
        assert link.split("#", 1)[1] in anchors, f"{rule['alert']}: no heading for {link}"


def _rule(predicate: Any) -> list[dict[str, Any]]:
    return [r for r in alert_rules() if predicate(r)]


def test_alerts_cover_the_runbook_alert_table() -> None:
    def compact(rule: dict[str, Any]) -> str:
        return " ".join(rule["expr"].split())

    def severity(rule: dict[str, Any]) -> str:
        return str(rule["labels"]["severity"])

    errors = _rule(lambda r: "job:grpc_server_errors:ratio_rate5m" in compact(r))
    assert {(severity(r), compact(r).rsplit(">", 1)[1].strip()) for r in errors} == {
        ("critical", "0.01"),
        ("warning", "0.005"),
    }
    latency = _rule(lambda r: compact(r).startswith("job:grpc_server_handling_seconds:p95_5m"))
    assert latency and compact(latency[0]).endswith("> 0.5")
    pool = _rule(lambda r: "jackpot_db_pool_in_use / jackpot_db_pool_max_size > 0.95" in compact(r))
    assert pool and severity(pool[0]) == "critical"
    exhausted = _rule(lambda r: "jackpot_db_pool_requests_waiting > 0" in compact(r))
    assert [severity(r) for r in exhausted] == ["critical"]
    growth = _rule(lambda r: "jackpot_pool_current_amount_minor_units" in compact(r))
    assert growth and compact(growth[0]).endswith("< 0") and growth[0]["for"] == "1h"
    config = _rule(lambda r: "jackpot_config_changes_total[1h]" in compact(r))
    assert config and compact(config[0]).endswith("> 5")
    assert _rule(lambda r: compact(r) == 'up{job="jackpot"} == 0' and severity(r) == "critical")
    assert _rule(lambda r: compact(r) == 'absent(up{job="jackpot"})' and severity(r) == "critical")


# (runbook row, what the expression reads, {(comparison, threshold): severity})
RUNBOOK_LEVELS = [
    (
        "Response Time (Contribution)",
        'job_grpc_method:grpc_server_handling_seconds:p95_5m{grpc_method="Contribute"}',
        {(">", 0.2): "warning", (">", 0.5): "critical"},
    ),
    (
        "Response Time (Win Processing)",
        'job_grpc_method:grpc_server_handling_seconds:p95_5m{grpc_method="Win"}',
        {(">", 0.3): "warning", (">", 1.0): "critical"},
    ),
    (
        "Response Time (Pool Query)",
        'job_grpc_method:grpc_server_handling_seconds:p95_5m{grpc_method="GetPools"}',
        {(">", 0.1): "warning", (">", 0.25): "critical"},
    ),
    # The critical level alone mails: quiet hours reach it every night. It pages only
    # when also far below last week's (test_throughput_pages_only_below_last_weeks).
    (
        "Throughput (ops/min)",
        "job:grpc_server_handled:rate5m * 60",
        {("<", 500.0): "warning", ("<", 100.0): "warning"},
    ),
    (
        "Database Connections (% of pool)",
        "jackpot_db_pool_in_use / jackpot_db_pool_max_size",
        {(">", 0.8): "warning", (">", 0.95): "critical"},
    ),
    (
        "Network Latency (database response time)",
        "jackpot_database_ping_seconds",
        {(">", 0.05): "warning", (">", 0.1): "critical"},
    ),
    (
        "CPU Usage",
        'process_cpu_seconds_total{job="jackpot"}',
        {(">", 0.8): "warning", (">", 0.95): "critical"},
    ),
]
COMPARISON = re.compile(r"([<>]=?)\s*(\d+(?:\.\d+)?)$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def seconds(duration: str) -> int:
    return int(duration[:-1]) * UNIT_SECONDS[duration[-1]]


@pytest.mark.parametrize(
    ("row", "reads", "levels"), RUNBOOK_LEVELS, ids=[row for row, _, _ in RUNBOOK_LEVELS]
)
def test_alerts_have_each_runbook_level_with_its_severity(
    row: str, reads: str, levels: dict[tuple[str, float], str]
) -> None:
    found: dict[tuple[str, float], str] = {}
    hold: dict[str, int] = {}
    for rule in _rule(lambda r: reads in " ".join(r["expr"].split())):
        match = COMPARISON.search(" ".join(rule["expr"].split()))
        if match is None:  # e.g. "pool exhausted", checked on its own
            continue
        level = (match[1], float(match[2]))
        assert level not in found, f"{row}: two rules for {level}"
        found[level] = rule["labels"]["severity"]
        hold[found[level]] = seconds(str(rule["for"]))
    assert found == levels, f"{row}: rules {found}, runbook {levels}"
    # a warning waits at least as long as the critical before it fires
    assert hold["warning"] >= hold.get("critical", 0), row


def test_throughput_pages_only_below_last_weeks() -> None:
    """The runbook's < 100 ops/min pages only when also below 20% of a week ago."""
    rate = "job:grpc_server_handled:rate5m"
    paging = _rule(lambda r: rate in r["expr"] and r["labels"]["severity"] == "critical")
    assert [r["alert"] for r in paging] == ["JackpotThroughputCritical"]
    expr = " ".join(paging[0]["expr"].split())
    assert expr == f"{rate} * 60 < 100 and {rate} < 0.2 * ({rate} offset 1w)"
    assert "JackpotThroughputCritical" in OPERATIONS.read_text()


# --- process managers ----------------------------------------------------------------------


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


TARGET_SERVICES = ("jackpot.service", "jackpot-gateway.service")


def test_jackpot_target_is_down_while_a_service_has_failed() -> None:
    # Wants= alone kept the target active over a failed server (`systemctl status
    # jackpot.target` said active). BindsTo= with After=: active only while both are.
    target = unit(SYSTEMD / "jackpot.target")["Unit"]
    assert set(target["BindsTo"].split()) == set(TARGET_SERVICES)
    assert set(TARGET_SERVICES) <= set(target["After"].split())
    for name in TARGET_SERVICES:
        service = unit(SYSTEMD / name)
        assert service["Unit"]["PartOf"] == "jackpot.target"  # stop/restart reach both
        assert service["Service"]["Restart"] == "on-failure"
        # A restart must not pass through "failed" (systemd 254+ does by default), or the
        # bound target would go down with every restart and take the gateway with it.
        assert service["Service"]["RestartMode"] == "direct"


def test_systemd_analyze_verifies_the_service_units(tmp_path: Path) -> None:
    require_tool("systemd-analyze", "apt-get install systemd")
    for name in ("jackpot.target", *TARGET_SERVICES):
        # The release's binary is not installed here: an executable that exists instead.
        text = (SYSTEMD / name).read_text().replace("/opt/jackpot/venv/bin/jackpot", "/bin/true")
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "jackpot.target", *TARGET_SERVICES],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # systemd before 254 does not know RestartMode= yet and says so; nothing else may show.
    complaints = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if line.strip() and "Unknown key 'RestartMode'" not in line
    ]
    assert done.returncode == 0 and not complaints, complaints


def test_systemd_units_run_server_and_gateway_side_by_side() -> None:
    systemd = SYSTEMD
    serve = unit(systemd / "jackpot.service")
    gateway = unit(systemd / "jackpot-gateway.service")
    assert assert_parses(serve["Service"]["ExecStart"]).command == "serve"
    assert assert_parses(gateway["Service"]["ExecStart"]).command == "gateway"
    for service in (serve, gateway):
        assert service["Service"]["User"] not in ("root", "0")
        assert service["Service"]["KillSignal"] == "SIGTERM"
        assert service["Install"]["WantedBy"] == "jackpot.target"
    binds = unit(systemd / "jackpot.target")["Unit"]["BindsTo"].split()
    assert set(binds) == {"jackpot.service", "jackpot-gateway.service"}

    for oneshot in ("jackpot-backup.service", "jackpot-maintenance.service"):
        oneshot_service = unit(systemd / oneshot)["Service"]
        for key in ("ExecStart", "ExecStartPost"):
            assert_parses(oneshot_service[key])
        timer = unit(systemd / oneshot.replace(".service", ".timer"))
        assert timer["Timer"]["OnCalendar"]


SYSTEMD = PROJECT_ROOT / "deploy" / "systemd"
LOGROTATE = PROJECT_ROOT / "deploy" / "logrotate" / "jackpot"
HARDENING = (
    "NoNewPrivileges",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectControlGroups",
    "RestrictSUIDSGID",
    "RestrictRealtime",
    "LockPersonality",
    "UMask",
)


def unit_entries(path: Path) -> dict[str, list[str]]:
    """The [Service] section's settings, each with every value it is given (systemd keeps
    repeated Environment= lines; configparser would keep only the last)."""
    entries: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            entries.setdefault(key, []).append(value)
    return entries


def unit_settings(entries: dict[str, list[str]]) -> Settings:
    env = dict(value.split("=", 1) for value in entries.get("Environment", []))
    return Settings.from_env(env)


def writable_paths(entries: dict[str, list[str]]) -> list[Path]:
    """What a ProtectSystem=strict unit may write: its systemd-made directories and
    ReadWritePaths (PrivateTmp gives it a /tmp of its own)."""
    paths = [Path("/var/log") / d for d in entries.get("LogsDirectory", [""])[0].split() if d]
    paths += [Path("/var/lib") / d for d in entries.get("StateDirectory", [""])[0].split() if d]
    for value in entries.get("ReadWritePaths", []):
        paths += [Path(p.lstrip("-")) for p in value.split()]
    return paths


def can_write(entries: dict[str, list[str]], path: Path) -> bool:
    return any(path == w or w in path.parents for w in writable_paths(entries))


def service_units() -> list[Path]:
    units = sorted(SYSTEMD.glob("*.service"))
    assert len(units) == 5
    return units


@pytest.mark.parametrize("path", service_units(), ids=lambda p: p.name)
def test_every_unit_can_write_where_it_logs_and_works(path: Path) -> None:
    entries = unit_entries(path)
    assert entries["ProtectSystem"] == ["strict"]
    settings = unit_settings(entries)
    assert can_write(entries, settings.process.log_dir), (
        f"{path.name}: cannot write {settings.process.log_dir}"
    )
    assert can_write(entries, Path(entries["WorkingDirectory"][0])), path.name
    for key in ("ExecStart", "ExecStartPost"):
        for command in entries.get(key, []):
            args = assert_parses(command)
            if args.command == "serve":
                assert not args.migrate, "migrations are a deployment step, not a start step"
            if getattr(args, "dir", None):
                assert Path(args.dir) == settings.database.backup_dir, f"{path.name}: --dir"
                assert can_write(entries, Path(args.dir)), f"{path.name}: cannot write --dir"


def test_every_unit_is_hardened_alike() -> None:
    hardening = {
        path.name: {key: unit_entries(path).get(key) for key in HARDENING}
        for path in service_units()
    }
    first = next(iter(hardening.values()))
    assert all(first[key] for key in HARDENING), first
    for name, found in hardening.items():
        assert found == first, f"{name} is hardened differently"


def logrotate_stanza() -> tuple[list[str], list[list[str]]]:
    text = "\n".join(
        ln for ln in LOGROTATE.read_text().splitlines() if not ln.lstrip().startswith("#")
    )
    head, _, body = text.partition("{")
    directives = [ln.split() for ln in body.partition("}")[0].splitlines() if ln.strip()]
    return head.split(), directives


def test_logrotate_rotates_the_file_the_units_write() -> None:
    paths, directives = logrotate_stanza()
    written = set()
    for path in service_units():
        entries = unit_entries(path)
        written.add(unit_settings(entries).process.log_dir / logging_setup.LOG_FILE)
        owner = [entries["User"][0], entries["Group"][0]]
    assert [Path(p) for p in paths] == sorted(written)
    assert ["su", *owner] in directives
    assert ["create", "0640", *owner] in directives
    # The supervisord example writes the same file.
    conf = unit(PROJECT_ROOT / "deploy" / "supervisord.conf")
    for section in conf.sections():
        if section.startswith("program:"):
            env = dict(
                pair.split("=", 1) for pair in conf[section]["environment"].split(",") if pair
            )
            log_dir = Path(env["JACKPOT_LOG_DIR"].strip('"'))
            assert log_dir / logging_setup.LOG_FILE in written


def test_supervisord_runs_server_and_gateway_side_by_side() -> None:
    conf = unit(PROJECT_ROOT / "deploy" / "supervisord.conf")
    commands = {
        section.removeprefix("program:"): conf[section]["command"]
        for section in conf.sections()
        if section.startswith("program:")
    }
    assert {k: assert_parses(v).command for k, v in commands.items()} == {
        "jackpot-serve": "serve",
        "jackpot-gateway": "gateway",
    }
    assert set(conf["group:jackpot"]["programs"].split(",")) == set(commands)


# --- the operations guide ------------------------------------------------------------------


def documented_commands(markdown: str) -> list[str]:
    """Every runnable `jackpot ...` command in code spans and code blocks."""
    candidates: list[str] = []
    in_block = False
    for line in markdown.replace("\\\n", " ").splitlines():
        if line.startswith("```"):
            in_block = not in_block
        elif in_block:
            candidates.append(line)
        else:
            candidates.extend(re.findall(r"`(jackpot [^`]+)`", line))
    commands = []
    for candidate in candidates:
        for part in re.split(r"&&|\|\||\||;|>", candidate):
            part = part.split(" #")[0].strip()
            words = part.split()
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words.pop(0)  # VAR=value prefixes
            part = " ".join(words)
            if not part.startswith("jackpot ") or re.search(r"[\[<]|\.\.\.|\bGREEN\b", part):
                continue
            commands.append(part.removesuffix("&").strip())
    return commands


def test_every_command_in_the_deployment_guide_parses_and_readme_links_it() -> None:
    guide = PROJECT_ROOT / "docs" / "DEPLOY.md"
    commands = documented_commands(guide.read_text())
    used = {assert_parses(c).command for c in commands}
    assert {"migrate", "serve", "gateway", "backup"} <= used
    assert "(docs/DEPLOY.md)" in (PROJECT_ROOT / "README.md").read_text()


def test_every_command_in_the_operations_guide_parses() -> None:
    commands = documented_commands(OPERATIONS.read_text())
    assert len(commands) > 30
    used = {assert_parses(c).command for c in commands}
    assert {"health", "smoke", "db", "backup", "diagnostics", "report", "config"} <= used


def test_every_runbook_script_has_a_translation() -> None:
    scripts = set(re.findall(r"npm run ([\w:-]+)", RUNBOOK.read_text()))
    guide = OPERATIONS.read_text()
    missing = sorted(s for s in scripts if f"npm run {s}" not in guide)
    assert not missing, f"runbook scripts without a translation in docs/OPERATIONS.md: {missing}"


# --- README ------------------------------------------------------------------------------


def settings_env_names() -> set[str]:
    """Every variable Settings.from_env reads: the names its groups' loaders (and the
    *_from_env / *_of helpers they call, read first so logging is set up early) pass to
    the env readers."""
    trees = [ast.parse(path.read_text()) for path in sorted(CONFIG.glob("*.py"))]
    readers = [
        node
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and (node.name == "from_env" or node.name.endswith(("_from_env", "_of")))
    ]
    return {
        node.value
        for reader in readers
        for node in ast.walk(reader)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and ENV_NAME.fullmatch(node.value)
    }


def readme_env_table() -> set[str]:
    """The names in the first column of README's "Ports and environment" table."""
    section = README.read_text().split("## Ports and environment", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split(" | ", 1)[0]))
    return names


def test_readme_starts_with_make_run_and_make_test() -> None:
    opening = README.read_text().split("\n## ", 1)[0]
    assert "make run" in opening and "make test" in opening


def test_every_setting_from_the_environment_is_in_the_readme_table() -> None:
    read = settings_env_names()
    assert {"DATABASE_URL", "GRPC_PORT", "JACKPOT_LOG_DIR", "JACKPOT_LOG_FORMAT"} <= read
    assert len(read) > 50, "the reader of config/ found too little: has from_env moved?"
    missing = sorted(read - readme_env_table())
    assert not missing, f"variables Settings.from_env reads, not in README's table: {missing}"


def test_docs_stand_on_their_own() -> None:
    for path in [README, *sorted((PROJECT_ROOT / "docs").rglob("*.md"))]:
        text = path.read_text()
        assert "../shared" not in text and "shared/" not in text, path
        assert "DESIGN.md" not in text, path


def test_the_previous_release_is_a_commit_of_this_history() -> None:
    lines = (PROJECT_ROOT / "deploy" / "PREVIOUS_RELEASE").read_text().splitlines()
    (commit,) = [line for line in lines if line and not line.startswith("#")]
    assert re.fullmatch(r"[0-9a-f]{40}", commit), commit
    if not (PROJECT_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    found = subprocess.run(
        ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=PROJECT_ROOT, check=False
    )
    assert found.returncode == 0, f"{commit} is not in this clone's history"
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert "scripts/previous_release_check.sh" in ci


def test_ci_runs_the_recovery_drill_the_operations_guide_describes() -> None:
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert "scripts/pitr_drill.sh" in ci
    guide = OPERATIONS.read_text()
    assert "### Point-in-time recovery drill (quarterly)" in guide
    assert "scripts/pitr_drill.sh" in guide
