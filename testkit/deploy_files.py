"""Deployment files read as their tools would: `jackpot` command lines, the Dockerfile."""

from __future__ import annotations

import argparse
import shlex

import pytest

from jackpot_grpc import cli
from testkit.paths import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "Dockerfile"


def assert_parses(command: str) -> argparse.Namespace:
    """The `jackpot` command line parsed by the real argument parser, or the test fails."""
    words = shlex.split(command)
    assert words[0].endswith("jackpot"), command
    try:
        return cli.build_parser().parse_args(words[1:])
    except SystemExit:
        pytest.fail(f"`{command}` is not a valid jackpot command")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    out = []
    for line in logical:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found
