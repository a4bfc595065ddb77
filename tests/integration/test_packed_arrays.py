"""Array parameters packed by adapters.packed_arrays arrive in PostgreSQL as the very
arrays psycopg's own dumping would send: same values, same type, at the edges of int64,
with NULLs, empty and multi-byte strings."""

from __future__ import annotations

import struct

import psycopg
import pytest

from jackpot_grpc.adapters.packed_arrays import bigints, byteas, texts

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


TEXT_CASES: list[list[str | None]] = [
    [],
    ["bench"],
    ["a", None, "", "é€😀", "x" * 300, 'quote" and {brace}, comma'],
    [None, None],
]


@pytest.mark.parametrize("values", TEXT_CASES, ids=["empty", "one", "mixed", "all-null"])
def test_packed_text_array_is_the_text_array_psycopg_sends(
    database_url: str, values: list[str | None]
) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT %b::text[], pg_typeof(%b)::text, %b::text[] IS NOT DISTINCT FROM %b::text[],"
            " cardinality(%b)",
            (texts(values), texts(values), texts(values), values, texts(values)),
        ).fetchone()
    assert row is not None
    assert row[0] == values
    assert row[1] == "text[]"
    assert row[2] is True
    assert row[3] == len(values)


BYTEA_CASES: list[list[bytes | None]] = [[], [b"\x00\xff"], [None, b"", bytes(range(256))]]


@pytest.mark.parametrize("values", BYTEA_CASES, ids=["empty", "one", "mixed"])
def test_packed_bytea_array_is_the_bytea_array_psycopg_sends(
    database_url: str, values: list[bytes | None]
) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT %b::bytea[], pg_typeof(%b)::text, %b::bytea[] IS NOT DISTINCT FROM %b::bytea[]",
            (byteas(values), byteas(values), byteas(values), values),
        ).fetchone()
    assert row is not None
    assert row[0] == values
    assert row[1] == "bytea[]"
    assert row[2] is True


def test_a_nul_in_a_packed_string_is_refused_by_the_database_as_psycopgs_would_be(
    database_url: str,
) -> None:
    with psycopg.connect(database_url) as conn:
        for value in (texts(["a\x00b"]), ["a\x00b"]):
            with pytest.raises(psycopg.errors.CharacterNotInRepertoire):
                conn.execute("SELECT %b::text[]", (value,))
            conn.rollback()


@pytest.mark.parametrize("encoding", ["UTF8", "LATIN1"])
def test_packed_strings_arrive_as_sent_whatever_the_client_encoding(
    database_url: str, encoding: str
) -> None:
    """Binary text is read in the session's client encoding: a LATIN1 session must get
    LATIN1 bytes, or 'café' would be stored as 'cafÃ©'."""
    values = ["café", None, "plain"]
    with psycopg.connect(database_url, options=f"-c client_encoding={encoding}") as conn:
        row = conn.execute(
            "SELECT %b::text[], convert_to((%b::text[])[1], 'UTF8'),"
            " %b::text[] IS NOT DISTINCT FROM %b::text[]",
            (texts(values), texts(values), texts(values), values),
        ).fetchone()
    assert row is not None
    assert row[0] == values
    assert bytes(row[1]) == "café".encode()
    assert row[2] is True
