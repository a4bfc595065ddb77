"""Any WARNING during a transaction makes its commit's outcome unknown, in any language.

A cancelled synchronous-replication wait is answered by PostgreSQL with a successful COMMIT
and a WARNING whose text follows lc_messages ("Warten auf synchrone Replikation wird wegen
Benutzeraufforderung abgebrochen" on a German server) and whose SQLSTATE is the generic
01000. Here a real server sends a real WARNING with that German text at COMMIT time (a
deferred constraint trigger raises it while the commit runs), through the real batch paths
of the batch thread: the caller must get UNAVAILABLE COMMIT_OUTCOME_UNKNOWN, never OK, and
the key retried replays the row that did commit. The real cancelled wait on a German
server of its own is slow: tests/reliability/test_commit_warning_german.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import psycopg
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.adapters.commit_bound import is_commit_warning
from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import start_server
from testkit.calls import error_reason

GERMAN = "Warten auf synchrone Replikation wird wegen Benutzeraufforderung abgebrochen"
DETAIL = (
    "Die Transaktion wurde lokal bereits committet, aber möglicherweise noch nicht zum"
    " Standby repliziert."
)

WARN_AT_COMMIT = f"""
CREATE FUNCTION test_warn_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE WARNING '{GERMAN}' USING DETAIL = '{DETAIL}';
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER test_warn_at_commit AFTER INSERT ON contributions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_warn_at_commit();
"""


@pytest.fixture
def warning_url(database_url: str) -> Iterator[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(WARN_AT_COMMIT)
    yield database_url


def test_a_real_warning_in_any_language_counts_and_a_notice_does_not(database_url: str) -> None:
    seen: list[tuple[str | None, str | None, bool]] = []

    def classify(diag: psycopg.errors.Diagnostic) -> None:  # valid only in the callback
        seen.append((diag.severity_nonlocalized, diag.sqlstate, is_commit_warning(diag)))

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.add_notice_handler(classify)
        conn.execute(f"DO $$ BEGIN RAISE WARNING '{GERMAN}'; END $$")
        conn.execute("DO $$ BEGIN RAISE NOTICE 'ein Hinweis'; END $$")
    assert seen == [("WARNING", "01000", True), ("NOTICE", "00000", False)]


async def test_a_localized_warning_at_commit_is_never_acknowledged(
    settings: Settings, warning_url: str
) -> None:
    server = await start_server(settings, warning_url, port=0)
    request = pb.ContributeRequest(game_id="warned", wager_amount=1000, idempotency_key="w-1")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Contribute(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
            assert error_reason(caught.value) == "COMMIT_OUTCOME_UNKNOWN"
            # The commit had landed: the keyed retry replays it (the trigger fires on
            # inserts only, and a replay inserts nothing).
            replay = await stub.Contribute(request, timeout=10)
            assert replay.replayed
    finally:
        await server.stop(grace=1.0)
    with psycopg.connect(warning_url) as conn:
        row = conn.execute("SELECT count(*) FROM contributions WHERE idempotency_key = 'w-1'")
        assert row.fetchone() == (1,)
