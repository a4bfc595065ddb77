"""List test functions that assert nothing, and fail if there is any (`make lint`).

A test asserts when its body (nested functions and classes included) has an `assert`, a
`raise` of an exception, `pytest.raises`/`pytest.fail`/`pytest.warns`, or a call to a
helper that does: a function or method of the same module, of a conftest.py, or of
testkit/, matched by name, followed through helpers calling helpers. A test that truly
has nothing to assert goes into scripts/test_assertions_allowed.txt with the reason.

    python scripts/check_test_assertions.py [ROOT]
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ALLOWED_FILE = Path(__file__).with_name("test_assertions_allowed.txt")
PYTEST_CHECKS = {"raises", "fail", "warns", "deprecated_call"}

Function = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass
class Module:
    path: Path
    tree: ast.Module
    # name -> every function or method of that name in the module
    functions: dict[str, list[Function]] = field(default_factory=dict)


def load(path: Path) -> Module:
    module = Module(path, ast.parse(path.read_text(), filename=str(path)))
    for node in ast.walk(module.tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            module.functions.setdefault(node.name, []).append(node)
    return module


def checks_directly(node: ast.AST) -> bool:
    """An assert, a raise of an exception, or pytest.raises/fail/warns anywhere inside."""
    for child in ast.walk(node):
        if isinstance(child, ast.Assert):
            return True
        if isinstance(child, ast.Raise) and child.exc is not None:
            return True
        if (
            isinstance(child, ast.Attribute)
            and child.attr in PYTEST_CHECKS
            and isinstance(child.value, ast.Name)
            and child.value.id == "pytest"
        ):
            return True
    return False


def called_names(node: ast.AST) -> set[str]:
    """The names of what is called inside: f(...) gives f, x.f(...) gives f."""
    names = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Call):
            if isinstance(child.func, ast.Name):
                names.add(child.func.id)
            elif isinstance(child.func, ast.Attribute):
                names.add(child.func.attr)
    return names


def asserting_names(modules: list[Module]) -> set[str]:
    """Names of helpers (in `modules`) that assert, directly or through other helpers."""
    helpers: dict[str, list[Function]] = {}
    for module in modules:
        for name, nodes in module.functions.items():
            helpers.setdefault(name, []).extend(nodes)
    asserting = {n for n, nodes in helpers.items() if any(checks_directly(f) for f in nodes)}
    calls = {n: set().union(*(called_names(f) for f in nodes)) for n, nodes in helpers.items()}
    changed = True
    while changed:  # a fixed point: helpers calling asserting helpers assert too
        changed = False
        for name, callees in calls.items():
            if name not in asserting and callees & asserting:
                asserting.add(name)
                changed = True
    return asserting


def test_functions(module: Module) -> Iterator[tuple[str, Function]]:
    """(node id, function) for each test: test_* at module level or in a Test* class."""
    relative = module.path.as_posix()
    for node in module.tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name.startswith("test_"):
                yield f"{relative}::{node.name}", node
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(
                    item, ast.FunctionDef | ast.AsyncFunctionDef
                ) and item.name.startswith("test_"):
                    yield f"{relative}::{node.name}::{item.name}", item


def allowed(path: Path) -> dict[str, str]:
    """node id -> reason, from lines 'node id  # reason' (every entry needs a reason)."""
    entries = {}
    for number, line in enumerate(path.read_text().splitlines() if path.exists() else [], 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        node_id, _, reason = line.partition("#")
        if not reason.strip():
            raise SystemExit(f"{path}:{number}: {node_id.strip()} has no reason")
        entries[node_id.strip()] = reason.strip()
    return entries


def unasserted(root: Path) -> list[str]:
    """Node ids of the tests under root/tests that assert nothing."""
    shared = [load(p) for p in sorted((root / "testkit").rglob("*.py"))]
    shared += [load(p) for p in sorted((root / "tests").rglob("conftest.py"))]
    found = []
    for path in sorted((root / "tests").rglob("test_*.py")):
        if "node_modules" in path.parts:
            continue
        module = load(path)
        module.path = path.relative_to(root)
        names = asserting_names([module, *shared])
        for node_id, function in test_functions(module):
            if not (checks_directly(function) or called_names(function) & names):
                found.append(node_id)
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    permitted = allowed(ALLOWED_FILE)
    found = unasserted(root)
    bad = [node_id for node_id in found if node_id not in permitted]
    stale = sorted(set(permitted) - set(found))
    for node_id in bad:
        print(f"{node_id}: asserts nothing (no assert, raise, pytest.raises/fail, nor helper)")
    for node_id in stale:
        print(f"{ALLOWED_FILE.name}: {node_id} is allowed but asserts now (or is gone)")
    if bad or stale:
        return 1
    print(f"check_test_assertions: every test asserts ({len(permitted)} allowed without)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
