"""`jackpot ... --help` works for every command and subcommand of the real parser.

argparse formats help strings with `%`, so one stray `%` in any help text turns that
command's --help into a TypeError; walking the whole tree catches it wherever it is.
"""

from __future__ import annotations

import argparse

import pytest

from jackpot_grpc.cli import build_parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def command_paths(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Every command path of the tree, the top level (an empty path) first."""
    paths = [prefix]
    for name, sub in _subcommands(parser).items():
        paths += command_paths(sub, (*prefix, name))
    return paths


PATHS = command_paths(build_parser())


def test_the_walk_finds_nested_subcommands() -> None:
    assert {("serve",), ("smoke",), ("db", "pool-status"), ("config", "update")} <= set(PATHS)


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(path) or "jackpot")
def test_help_exits_zero_and_prints_usage(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*path, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(('jackpot', *path))}")
