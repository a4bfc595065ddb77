"""bigint[] parameters packed by adapters.packed_arrays arrive in PostgreSQL as the very
arrays psycopg's own dumping would send: same values, same type, at the edges of int64."""

from __future__ import annotations

import struct

import psycopg
import pytest

from jackpot_grpc.adapters.packed_arrays import bigints

CASES = [
    [],
    [7],
    [0, -1, 1, 2**63 - 1, -(2**63)],
    list(range(-500, 500)),
]


@pytest.mark.parametrize("values", CASES, ids=["empty", "one", "int64-edges", "thousand"])
def test_packed_array_is_the_bigint_array_psycopg_sends(
    database_url: str, values: list[int]
) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT %b::bigint[], pg_typeof(%b)::text, %b::bigint[] = %b::bigint[],"
            " cardinality(%b), array_lower(%b, 1)",
            (
                bigints(values),
                bigints(values),
                bigints(values),
                values,
                bigints(values),
                bigints(values),
            ),
        ).fetchone()
    assert row is not None
    assert row[0] == values
    assert row[1] == "bigint[]"
    assert row[2] is True
    assert row[3] == len(values)
    assert row[4] == (1 if values else None)


def test_a_value_outside_int64_is_refused_before_sending() -> None:
    with pytest.raises(struct.error):
        bigints([2**63])
