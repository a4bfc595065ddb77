"""Every curl command in the runbook, run with the real curl against a real server and gateway.

The runbook (docs/runbook/, the shared one's copy, kept in step by test_deploy_files)
addresses the gateway on localhost:3000 and the health/metrics HTTP on localhost:3001.
Each `curl` there is taken as written (backslash continuations joined, a `for endpoint in
...` loop expanded, anything after a `|`, `||`, `;` or `)` dropped: a `| jq` filter is read
in Python instead), pointed at the ports a server and a gateway bound on port 0, and run
with its own flags plus a bounded timeout. Each must answer 2xx with a JSON body, but for
the one the runbook gets wrong: its performance dashboard loop times
`curl http://localhost:3000/api/jackpot/contribute`, a GET on a POST route, which is a 405
with a JSON google.rpc.Status body.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from jackpot_grpc.entrypoints.server import RunningServer
from jackpot_grpc.gateway.app import create_gateway_app, start_gateway
from testkit.paths import PROJECT_ROOT
from testkit.tools import require_tool

RUNBOOK = PROJECT_ROOT / "docs" / "runbook" / "jackpot-service-runbook.md"
CURL_TIMEOUT = 10.0  # seconds, per command: curl's --max-time, and subprocess's backstop
RUNBOOK_HOSTS = ("localhost:3000", "localhost:3001")
# (method, path) → the status a runbook command gets; anything else must be 2xx.
EXPECTED_STATUS = {("GET", "/api/jackpot/contribute"): 405}

_CURL_AT = re.compile(r"\bcurl\s")
_FOR_LOOP = re.compile(r"^\s*for\s+(\w+)\s+in\s+(.*?);\s*do\b")
_JQ_PATH = re.compile(r"\|\s*jq\s+'?(\.[A-Za-z_][\w.]*)'?")
_SEPARATORS = set("|&;()")
# Flags whose value decides where curl's output goes: this test sets its own.
_OUTPUT_FLAGS = {"-o", "--output", "-w", "--write-out", "-D", "--dump-header"}
_DATA_FLAGS = {"-d", "--data", "--data-raw", "--data-binary", "--data-ascii", "--json"}


@dataclass
class RunbookCurl:
    args: tuple[str, ...]  # curl's arguments, as the runbook writes them (ports unchanged)
    lines: list[int] = field(default_factory=list)  # where the runbook has this command
    jq_paths: set[str] = field(default_factory=set)  # `| jq '.a.b'`: the body has .a.b

    @property
    def url(self) -> str:
        return next(a for a in self.args if any(h in a for h in RUNBOOK_HOSTS))

    @property
    def method(self) -> str:
        for flag, value in zip(self.args, self.args[1:], strict=False):
            if flag in ("-X", "--request"):
                return value.upper()
        return "POST" if _DATA_FLAGS & set(self.args) else "GET"

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def expected_status(self) -> int | None:
        """The status the runbook implies; None: any 2xx."""
        return EXPECTED_STATUS.get((self.method, self.path))

    @property
    def id(self) -> str:
        target = self.url.split("localhost", 1)[1]
        return f"L{self.lines[0]}-{self.method}-{target}"


def _logical_lines(text: str) -> list[tuple[int, str, bool]]:
    """(first line number, the line with `\\` continuations joined, starts a code fence)."""
    result: list[tuple[int, str, bool]] = []
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending.append(line.rstrip()[:-1])
            continue
        joined = " ".join([*pending, line])
        pending = []
        result.append((start, joined, joined.lstrip().startswith("```")))
    return result


def _curl_args(command: str) -> list[str]:
    """The words of the curl command at the start of `command`, up to a pipe or the like."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars="|&;()")
    lexer.whitespace_split = True
    words: list[str] = []
    try:
        for word in lexer:
            if set(word) <= _SEPARATORS:
                break
            words.append(word)
    except ValueError:  # an unclosed quote after the curl part (e.g. `watch '... | jq'`)
        pass
    return words[1:]  # without "curl"


def runbook_curls(text: str) -> list[RunbookCurl]:
    """Every curl against the gateway or the health port, once per distinct command."""
    found: dict[tuple[str, ...], RunbookCurl] = {}
    loop_values: dict[str, list[str]] = {}
    for number, line, fence in _logical_lines(text):
        if fence:
            loop_values = {}  # a loop variable is known within its own code block only
            continue
        loop = _FOR_LOOP.match(line)
        if loop:
            loop_values[loop.group(1)] = shlex.split(loop.group(2))
        for at in _CURL_AT.finditer(line):
            args = _curl_args(line[at.start() :])
            if not any(host in arg for arg in args for host in RUNBOOK_HOSTS):
                continue
            jq = _JQ_PATH.search(line[at.start() :])
            for expanded in _expand(args, loop_values):
                entry = found.setdefault(expanded, RunbookCurl(expanded))
                entry.lines.append(number)
                entry.jq_paths.update([jq.group(1)] if jq else [])
    return list(found.values())


def _expand(args: list[str], loop_values: dict[str, list[str]]) -> list[tuple[str, ...]]:
    """One command per value of a `for` loop variable the arguments use ($name or ${name})."""
    for name, values in loop_values.items():
        pattern = re.compile(rf"\$(?:{name}\b|\{{{name}\}})")
        if any(pattern.search(arg) for arg in args):
            return [
                expanded
                for value in values
                for expanded in _expand([_substitute(pattern, value, a) for a in args], loop_values)
            ]
    return [tuple(args)]


def _substitute(pattern: re.Pattern[str], value: str, arg: str) -> str:
    return pattern.sub(lambda _: value, arg)  # a function: the value is taken literally


def _cases() -> list[Any]:
    return [pytest.param(c, id=c.id) for c in runbook_curls(RUNBOOK.read_text())]


# --- the parser, on the runbook itself -------------------------------------------------------


def test_every_runbook_curl_line_is_extracted() -> None:
    text = RUNBOOK.read_text()
    expected = {
        n
        for n, line in enumerate(text.splitlines(), 1)
        if _CURL_AT.search(line) and any(h in line for h in RUNBOOK_HOSTS)
    }
    curls = runbook_curls(text)
    assert {n for c in curls for n in c.lines} == expected
    commands = {(c.method, c.url.split("localhost", 1)[1]) for c in curls}
    assert ("GET", ":3000/api/jackpot/pools") in commands
    assert ("POST", ":3000/api/jackpot/contribute") in commands
    assert ("GET", ":3000/api/jackpot/contribute") in commands  # the dashboard loop, expanded
    assert ("GET", ":3001/health") in commands


def test_the_parser_on_shell_forms() -> None:
    text = "\n".join(
        [
            "```bash",
            "curl -X POST http://localhost:3000/a \\",
            "  -H 'Content-Type: application/json' \\",
            """  -d '{"k": 1}'""",
            "t=$(curl -s -o /dev/null -w '%{time_total}' http://localhost:3000/b)",
            "watch -n 5 'curl -s http://localhost:3001/c | jq .status'",
            "curl -f http://localhost:3001/c || echo down",
            'for e in "/x" "/y"; do',
            '  curl -s "http://localhost:3000$e"',
            "done",
            "curl https://example.com/elsewhere",
            "```",
        ]
    )
    curls = runbook_curls(text)
    assert [(c.lines, c.method, c.path, c.jq_paths) for c in curls] == [
        ([2], "POST", "/a", set()),
        ([5], "GET", "/b", set()),
        ([6], "GET", "/c", {".status"}),
        ([7], "GET", "/c", set()),
        ([9], "GET", "/x", set()),
        ([9], "GET", "/y", set()),
    ]
    assert curls[0].args[-2:] == ("-d", '{"k": 1}')
    assert curls[1].args == ("-s", "-o", "/dev/null", "-w", "%{time_total}", curls[1].url)


# --- every command, against the real thing --------------------------------------------------


@pytest.fixture
async def ports(server: RunningServer) -> AsyncIterator[dict[str, int]]:
    """The runbook's ports → the ports a real gateway (over a real server) bound."""
    app = create_gateway_app(
        f"127.0.0.1:{server.port}",
        max_body_bytes=64 * 1024,
        metrics_url=f"http://127.0.0.1:{server.health_port}/metrics",
        call_timeout=5.0,
    )
    running = await start_gateway(app, "127.0.0.1", 0, shutdown_timeout=1.0)
    try:
        await _healthy(f"http://127.0.0.1:{server.health_port}/health")
        yield {"localhost:3000": running.port, "localhost:3001": server.health_port}
    finally:
        await running.stop()


async def _healthy(url: str, within: float = 10.0) -> None:
    """The runbook checks a deployed service, not one still starting: wait for /health."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            async with http.get(url) as response:
                if response.status == 200:
                    return
            assert time.monotonic() < deadline, f"{url} not healthy within {within} s"
            await asyncio.sleep(0.1)


@dataclass
class CurlResult:
    returncode: int
    status: int
    content_type: str
    body: bytes
    headers: str
    stderr: str


def _run_curl(args: tuple[str, ...], ports: dict[str, int], scratch: Path) -> CurlResult:
    body, headers = scratch / "body", scratch / "headers"
    argv: list[str] = [require_tool("curl")]
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
            continue
        if arg in _OUTPUT_FLAGS:
            skip_value = True  # -o /dev/null, -w "%{time_total}": this test reads both
            continue
        for host, port in ports.items():
            arg = arg.replace(host, f"127.0.0.1:{port}")
        argv.append(arg)
    argv += [
        "--silent",
        "--show-error",
        "--max-time",
        str(CURL_TIMEOUT - 1),
        "--output",
        str(body),
        "--dump-header",
        str(headers),
        "--write-out",
        "%{http_code}\n%{content_type}",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=CURL_TIMEOUT, check=False)
    status, _, content_type = done.stdout.partition("\n")
    return CurlResult(
        returncode=done.returncode,
        status=int(status or 0),
        content_type=content_type,
        body=body.read_bytes() if body.exists() else b"",
        headers=headers.read_text() if headers.exists() else "",
        stderr=done.stderr,
    )


def _at_path(body: Any, path: str) -> Any:
    for key in filter(None, path.split(".")):
        assert isinstance(body, dict) and key in body, f"no {path} in {body}"
        body = body[key]
    return body


@pytest.mark.parametrize("curl", _cases())
async def test_runbook_curl(curl: RunbookCurl, ports: dict[str, int], tmp_path: Path) -> None:
    # In a thread: the server and the gateway answer from this test's event loop.
    result = await asyncio.to_thread(_run_curl, curl.args, ports, tmp_path)
    where = f"runbook line(s) {curl.lines}: curl {shlex.join(curl.args)}"
    assert result.content_type.startswith("application/json"), (where, result)
    body = json.loads(result.body)
    if curl.expected_status is None:
        assert 200 <= result.status < 300, (where, result)
        assert result.returncode == 0, (where, result)  # so `curl -f` succeeds too
        for path in curl.jq_paths:
            _at_path(body, path)
        return
    assert result.status == curl.expected_status, (where, result)
    if result.status == 405:  # a google.rpc.Status, and where the route is
        assert set(body) == {"code", "message", "details"}, body
        assert body["code"] == 12 and curl.method in body["message"], body  # UNIMPLEMENTED
        allow = re.search(r"(?im)^allow:\s*(.*?)\s*$", result.headers)
        assert allow and allow.group(1) == "POST", result.headers
