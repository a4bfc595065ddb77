"""Every promtool command the docs and the rule files' comments give, run verbatim (through
a shell, from the repository root, as an operator pastes it): each must pass. Skipped,
saying why, only where promtool is missing (`make prometheus-tools`)."""

from __future__ import annotations

import re
import subprocess

import pytest

from testkit.paths import PROJECT_ROOT
from testkit.tools import require_tool

# Where the commands are documented (the rule files' own comments included).
DOCUMENTS = (
    "README.md",
    "deploy/README.md",
    "docs/OPERATIONS.md",
    "deploy/prometheus/jackpot-alerts.yml",
    "deploy/prometheus/jackpot-recording.yml",
    "deploy/prometheus/jackpot-alerts.test.yml",
    "deploy/prometheus/jackpot-alerts-weekly.test.yml",
)
# In Markdown between backticks; in YAML comments to the end of the line.
IN_BACKTICKS = re.compile(r"`((?:cd deploy/prometheus && )?promtool (?:check|test) rules [^`]+)`")
IN_COMMENT = re.compile(r"^#.*?\b(promtool (?:check|test) rules .+?)\s*$", re.MULTILINE)


def documented_commands() -> list[str]:
    found: list[str] = []
    for name in DOCUMENTS:
        text = (PROJECT_ROOT / name).read_text()
        pattern = IN_BACKTICKS if name.endswith(".md") else IN_COMMENT
        for command in pattern.findall(text):
            if command not in found:
                found.append(command)
    return found


def test_the_docs_give_promtool_commands() -> None:
    commands = documented_commands()
    assert any(" check rules " in c for c in commands), commands
    assert any(" test rules " in c for c in commands), commands


@pytest.mark.parametrize("command", documented_commands())
def test_a_documented_promtool_command_passes(command: str) -> None:
    require_tool("promtool", "make prometheus-tools")
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
