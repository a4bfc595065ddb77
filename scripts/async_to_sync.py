"""Generate the blocking twin of an async module (as psycopg does with its async-to-sync tool).

The async module is the source; its twin is written from its syntax tree (stdlib `ast`):
`await x` becomes `x`, `async def`/`async with`/`async for` their plain forms, and the
names in RENAMES are replaced (AsyncConnection -> Connection). The output starts with a
line saying it is generated and is run through `ruff format`, so it passes the lint as is.
Comments are not carried over (ast drops them): the source says what it must in docstrings.

    python scripts/async_to_sync.py          # regenerate every twin in TWINS
    python scripts/async_to_sync.py --check  # exit 1 when a twin differs (make lint)
"""

from __future__ import annotations

import argparse
import ast
import difflib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# source (async) -> generated (blocking), relative to the repository root
TWINS = {
    Path("jackpot_grpc/adapters/two_flights_async.py"): Path(
        "jackpot_grpc/adapters/two_flights_sync.py"
    ),
}

# Names (variables, attributes, imported names) whose blocking counterpart is spelt apart.
RENAMES = {
    "AsyncConnection": "Connection",
}

COMMAND = "python scripts/async_to_sync.py"


class AsyncToSync(ast.NodeTransformer):
    """The blocking form of an async syntax tree."""

    def visit_Await(self, node: ast.Await) -> ast.AST:
        return self.visit(node.value)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        plain = ast.FunctionDef(**{name: getattr(node, name) for name in node._fields})
        return self.generic_visit(ast.copy_location(plain, node))

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:
        plain = ast.With(**{name: getattr(node, name) for name in node._fields})
        return self.generic_visit(ast.copy_location(plain, node))

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.AST:
        plain = ast.For(**{name: getattr(node, name) for name in node._fields})
        return self.generic_visit(ast.copy_location(plain, node))

    def visit_comprehension(self, node: ast.comprehension) -> ast.AST:
        node.is_async = 0
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = RENAMES.get(node.id, node.id)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        node.attr = RENAMES.get(node.attr, node.attr)
        return self.generic_visit(node)

    def visit_alias(self, node: ast.alias) -> ast.AST:
        node.name = RENAMES.get(node.name, node.name)
        return node


def generate(source: Path, target: Path) -> str:
    """The blocking twin of `source` (paths relative to ROOT), formatted as `target`."""
    tree = AsyncToSync().visit(ast.parse((ROOT / source).read_text(), str(source)))
    header = (
        f"# Generated from {source.as_posix()} by `{COMMAND}`.\n"
        "# Do not edit: edit the source and regenerate.\n"
    )
    code = header + ast.unparse(ast.fix_missing_locations(tree)) + "\n"
    # The imports sorted and grouped again (ast keeps no blank lines), then the layout.
    code = _ruff(["check", "--select", "I", "--fix", "--quiet"], code, target)
    return _ruff(["format"], code, target)


def _ruff(command: list[str], code: str, target: Path) -> str:
    """`code` through a ruff command, read as `target` (the repository's ruff settings)."""
    ran = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--stdin-filename", str(target), "-"],
        input=code,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return ran.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a twin differs"
    )
    args = parser.parse_args(argv)
    stale = 0
    for source, target in TWINS.items():
        wanted = generate(source, target)
        path = ROOT / target
        current = path.read_text() if path.exists() else ""
        if current == wanted:
            continue
        if args.check:
            stale += 1
            sys.stderr.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    wanted.splitlines(keepends=True),
                    str(target),
                    f"{target} (generated from {source})",
                )
            )
            print(f"{target} is not {source}'s generated twin: run {COMMAND}", file=sys.stderr)
        else:
            path.write_text(wanted)
            print(f"wrote {target}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
