"""The unit tests: no database, no server process, no network beyond this process's own
loopback listeners. A test asking for a database fails here; it belongs in
tests/integration (PostgreSQL) or tests/e2e (a real server)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def admin_url() -> str:
    """Every database fixture (database_url, server, channel, stub...) starts here."""
    pytest.fail("unit tests use no database: move this test to tests/integration or tests/e2e")
