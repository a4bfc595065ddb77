"""A missing tool skips a test on a developer's machine and fails it under CI=true."""

from __future__ import annotations

import pytest

from testkit.tools import require, require_tcp_server, require_tool

MISSING = "no-such-tool-jackpot"


def test_a_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=MISSING):
        require_tool(MISSING)


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_a_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=f"{MISSING} is not installed.*CI=true"):
        require_tool(MISSING)


def test_a_present_tool_is_found_whatever_ci_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert require_tool("sh").endswith("/sh")
    require(True, "never said")


def test_a_unix_socket_server_is_not_a_tcp_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert require_tcp_server("postgresql://u@127.0.0.1:6543/db") == ("127.0.0.1", 6543)
    with pytest.raises(pytest.fail.Exception, match="TCP"):
        require_tcp_server("postgresql://u@/db?host=/tmp/sockets")
