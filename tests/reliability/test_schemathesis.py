"""Schemathesis over the gateway's own /openapi.json: no 5xx for any input, and a
rejected call writes nothing.

The server and the gateway run as child processes (`jackpot serve`, `jackpot gateway`),
since schemathesis calls them synchronously from the test's thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from testkit.calls import ADMIN_TOKEN
from testkit.database import scratch_database
from testkit.figures import report, scaled
from testkit.ledger import check_books
from testkit.processes import base_url, serving, start_gateway

EXAMPLES = scaled(1500, minimum=50)  # per generation mode; JACKPOT_STRESS_SCALE raises it
WRITES = ("contributions", "wins", "seed_fundings", "config_audit")


@pytest.fixture(scope="module")
def service(admin_url: str, template_database: str, tmp_path_factory: Any) -> Iterator[Any]:
    logs = tmp_path_factory.mktemp("schemathesis")
    with (
        scratch_database(admin_url, "jackpot_schemathesis", template=template_database) as url,
        serving(url, logs) as serve,
    ):
        gateway = start_gateway(serve, logs)
        try:
            yield url, base_url(gateway)
        finally:
            assert gateway.stop() == 0


def written(conn: psycopg.Connection[Any]) -> tuple[int, ...]:
    """Rows in every ledger, and every pool's version: what any accepted write changes."""
    row = conn.execute(
        "SELECT "
        + ", ".join(f"(SELECT count(*) FROM {t})" for t in WRITES)
        + ", (SELECT array_agg(version ORDER BY lock_order) FROM jackpots)"
    ).fetchone()
    assert row is not None
    return (*row[:-1], *row[-1])


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_gateway_survives_its_own_openapi_schema(service: Any, mode: GenerationMode) -> None:
    url, base_url = service
    # Streams (pools:watch) never end by themselves: their own tests are test_watch_rest.py.
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json").exclude(path_regex=":watch$")
    session = requests.Session()
    statuses: dict[int, int] = {}
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def one_call(data: st.DataObject) -> None:
        case = data.draw(schema.as_strategy(mode))
        before = written(conn)
        response = case.call(base_url=base_url, session=session, headers=admin, timeout=10)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (case.method, case.path, response.text)
        content_type = response.headers.get("content-type", [""])[0]  # schemathesis: lists
        assert content_type.startswith("application/json"), (
            case.method,
            case.path,
            response.status_code,
            dict(response.headers),
            response.text,
        )
        if not 200 <= response.status_code < 300:
            assert written(conn) == before, (case.method, case.path, response.text)

    with psycopg.connect(url, autocommit=True) as conn:
        one_call()
    assert check_books(url) == []
    total = sum(statuses.values())
    report(f"schemathesis_{mode.value}", {"calls": total, "statuses": statuses})
    assert total >= EXAMPLES // 2
    if os.environ.get("JACKPOT_VERBOSE"):
        print(mode.value, statuses)
