"""Array parameters already in PostgreSQL's binary array format: a batch's per-row columns.

psycopg dumps a Python list of ints element by element in Python (it first walks the
list to choose the narrowest integer type, then dumps each element): about 0.33 µs an
element, and a contribution batch sends ten bigint arrays with one element per row, so
about 3 µs of every ContributeBatch item (BENCHMARKS.md). `bigints(values)` packs the
same binary array (PostgreSQL's array_send format: int8 elements, no NULLs) with one
`struct.pack`, about 0.07 µs an element; psycopg passes the bytes through as a bigint[].

The batch's text and bytea columns (keys, fingerprints, clients, games) and its small
bigint lists went the same generic way, walked and dumped in Python: about a third of the
batch thread's CPU per Contribute batch (BENCHMARKS.md). `texts` and `byteas` pack those
with one join each.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import adapters
from psycopg.abc import AdaptContext
from psycopg.adapt import Dumper
from psycopg.pq import Format

INT8_OID = 20
INT8_ARRAY_OID = 1016
BYTEA_OID, BYTEA_ARRAY_OID = 17, 1001
TEXT_OID, TEXT_ARRAY_OID = 25, 1009
_NULL = struct.pack(">i", -1)  # an element's length -1: NULL


@dataclass(frozen=True, slots=True)
class PackedBigints:
    """A bigint[] already in PostgreSQL's binary array format."""

    data: bytes


def bigints(values: Sequence[int]) -> PackedBigints:
    """`values` as one binary bigint[] (one dimension, lower bound 1, no NULLs). Raises
    struct.error for a value outside int64, as the database would refuse it."""
    count = len(values)
    if not count:
        return PackedBigints(_empty(INT8_OID))
    fields: list[int] = [8] * (2 * count)  # each element: its length (8), then its value
    fields[1::2] = values
    # ndim, has-nulls flag, element type, then the dimension's length and lower bound.
    return PackedBigints(struct.pack(f">iiiii{'iq' * count}", 1, 0, INT8_OID, count, 1, *fields))


@dataclass(frozen=True, slots=True)
class PackedTexts:
    """A text[] already in PostgreSQL's binary array format, its strings in UTF-8 (the
    values are kept for a connection in another client encoding: see the dumper)."""

    values: Sequence[str | None]
    data: bytes


@dataclass(frozen=True, slots=True)
class PackedByteas:
    """A bytea[] already in PostgreSQL's binary array format."""

    data: bytes


def texts(values: Sequence[str | None]) -> PackedTexts:
    """`values` as one binary text[] (None: NULL). A string that cannot be encoded raises
    UnicodeEncodeError, as psycopg's dumping would."""
    return PackedTexts(values, _encoded_texts(values, "utf-8"))


def _encoded_texts(values: Sequence[str | None], encoding: str) -> bytes:
    return _varlena_array([None if v is None else v.encode(encoding) for v in values], TEXT_OID)


def byteas(values: Sequence[bytes | None]) -> PackedByteas:
    """`values` as one binary bytea[] (None: NULL)."""
    return PackedByteas(_varlena_array(values, BYTEA_OID))


def _empty(oid: int) -> bytes:
    """An array with no dimension ('{}') of elements of type `oid`."""
    return struct.pack(">iii", 0, 0, oid)


def _varlena_array(values: Sequence[bytes | None], oid: int) -> bytes:
    if not values:
        return _empty(oid)
    has_null = None in values
    parts = [struct.pack(">iiiii", 1, int(has_null), oid, len(values), 1)]
    append = parts.append
    for value in values:
        if value is None:
            append(_NULL)
        else:
            append(len(value).to_bytes(4, "big"))
            append(value)
    return b"".join(parts)


class _PackedDumper(Dumper):
    """Sends a packed array's bytes as they are (subclasses give the array type)."""

    format = Format.BINARY

    def dump(self, obj: PackedBigints | PackedByteas) -> bytes:
        return obj.data


class PackedBigintsDumper(_PackedDumper):
    oid = INT8_ARRAY_OID


class PackedTextsDumper(Dumper):
    """Binary text is read in the session's client encoding: the packed UTF-8 bytes go as
    they are on a UTF-8 connection (every one the service opens, unless PGCLIENTENCODING or
    the URL says otherwise); on any other the strings are packed again in its encoding,
    as psycopg's own dumping would encode them."""

    format = Format.BINARY
    oid = TEXT_ARRAY_OID

    def __init__(self, cls: type, context: AdaptContext | None = None) -> None:
        super().__init__(cls, context)
        self._encoding = self.connection.info.encoding if self.connection else "utf-8"

    def dump(self, obj: PackedTexts) -> bytes:
        if self._encoding == "utf-8":
            return obj.data
        return _encoded_texts(obj.values, self._encoding)


class PackedByteasDumper(_PackedDumper):
    oid = BYTEA_ARRAY_OID


# Every connection made after this import knows the types (psycopg copies the global
# adapters into each new connection).
adapters.register_dumper(PackedBigints, PackedBigintsDumper)
adapters.register_dumper(PackedTexts, PackedTextsDumper)
adapters.register_dumper(PackedByteas, PackedByteasDumper)
