"""scripts/check_test_assertions.py (in `make lint`) finds tests that assert nothing."""

from __future__ import annotations

from pathlib import Path

from scripts.check_test_assertions import unasserted

TESTS = """
import pytest
from testkit.helpers import checked, unchecked

def helper_that_asserts(x):
    assert x

def helper_that_does_not(x):
    return x

def calls_a_helper_that_asserts(x):
    helper_that_asserts(x)

def test_assert():
    assert 1

def test_raises():
    with pytest.raises(ValueError):
        int("x")

def test_fail():
    pytest.fail("never")

def test_raise():
    raise AssertionError("never")

def test_through_a_helper():
    calls_a_helper_that_asserts(1)

def test_through_testkit():
    checked(1)

def test_nothing():
    helper_that_does_not(1)

async def test_nothing_async():
    unchecked(1)

class TestGrouped:
    def test_in_a_class(self):
        helper_that_does_not(2)
"""

TESTKIT = """
def checked(x):
    assert x

def unchecked(x):
    return x
"""


def test_the_checker_lists_exactly_the_tests_without_an_assertion(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "testkit").mkdir()
    (tmp_path / "tests" / "test_sample.py").write_text(TESTS)
    (tmp_path / "testkit" / "helpers.py").write_text(TESTKIT)
    assert unasserted(tmp_path) == [
        "tests/test_sample.py::test_nothing",
        "tests/test_sample.py::test_nothing_async",
        "tests/test_sample.py::TestGrouped::test_in_a_class",
    ]


def test_this_project_has_no_test_without_an_assertion() -> None:
    assert unasserted(Path(__file__).resolve().parent.parent.parent) == []
