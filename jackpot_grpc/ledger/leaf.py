"""The canonical leaf encoding: one ledger event, every field that carries meaning, as bytes.
(Long because every event type's schema is spelled out here, the one reference encoder.)

    leaf  = version (1 byte, 0x01) || event type (1 byte) || field || field || ...
    field = length (4 bytes, big-endian) || the value's canonical text in UTF-8
            (length 0xFFFFFFFF and no bytes: the value is absent, SQL NULL)

An event type's extension fields (added later) follow its first fields, all of them when any
is present and none when every one is absent (EXTENSION_FROM).

Fields come in a fixed order per event type (SCHEMAS), so no names are encoded and no two
events have the same bytes. Every value is text in one canonical form (FieldKind), so a
verifier in any language rebuilds the bytes from an export's fields. docs/LEDGER.md is the
specification; a test keeps its worked examples equal to this code.
"""

from __future__ import annotations

import enum
import functools
import struct
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

VERSION = 1
ABSENT = 0xFFFFFFFF
RATE_PLACES = 10  # numeric(12, 10): every rate has exactly ten fractional digits


class EventType(enum.IntEnum):
    CONTRIBUTION = 1
    WIN = 2
    SEED_FUNDING = 3
    CONFIG_CHANGE = 4
    POOL_LIFECYCLE = 5


class FieldKind(enum.Enum):
    INT = "int"  # decimal digits, '-' if negative, no leading zeros
    RATE = "rate"  # exactly ten fractional digits: 0.0050000000
    TEXT = "text"  # as stored
    TIME = "time"  # UTC, microseconds: 2026-12-06T12:45:56.123456Z
    UUID = "uuid"  # lowercase, hyphenated
    HEX = "hex"  # bytes as lowercase hex


@dataclass(frozen=True)
class Field:
    name: str
    kind: FieldKind
    nullable: bool = False
    # An extension field (added after the event type's first fields): the extension is
    # encoded only when one of its fields is present (EXTENSION_FROM).
    extension: bool = False


def _f(name: str, kind: FieldKind, nullable: bool = False) -> Field:
    return Field(name, kind, nullable)


def _x(name: str, kind: FieldKind) -> Field:
    return Field(name, kind, nullable=True, extension=True)


INT, RATE, TEXT, TIME, UUID, HEX = (
    FieldKind.INT,
    FieldKind.RATE,
    FieldKind.TEXT,
    FieldKind.TIME,
    FieldKind.UUID,
    FieldKind.HEX,
)

_HEAD = (_f("leaf_index", INT), _f("id", INT))
_KEYED = (_f("client", TEXT), _f("idempotency_key", TEXT, True), _f("fingerprint", HEX, True))
_POOL_SHARE = tuple(
    f
    for g in ("minor", "major", "mega")
    for f in (
        _f(f"{g}_rate", RATE, True),
        _f(f"{g}_cap", INT, True),
        _f(f"{g}_amount", INT),
        _f(f"{g}_after", INT),
    )
)
_CONFIG = tuple(
    f
    for side in ("before", "after")
    for f in (
        # Absent when the change's before/after document does not record it.
        _f(f"{side}_contribution_rate", RATE, True),
        _f(f"{side}_seed_amount", INT, True),
        _f(f"{side}_max_amount", INT, True),
        _f(f"{side}_version", INT, True),
    )
)

# The reserve and overflow (migration 0014): absent on rows written before it.
_POOL_METERS = tuple(
    f
    for g in ("minor", "major", "mega")
    for f in (
        _x(f"{g}_reserve_rate", RATE),
        _x(f"{g}_reserve", INT),
        _x(f"{g}_overflow", INT),
        _x(f"{g}_overflow_to", TEXT),
    )
)
_CONFIG_METERS = tuple(
    f
    for side in ("before", "after")
    for f in (
        _x(f"{side}_reserve_rate", RATE),
        _x(f"{side}_overflow_policy", TEXT),
        _x(f"{side}_overflow_target", TEXT),
    )
)

# A pool lifecycle change: suspend, resume, or a config change scheduled for the next win
# (its `pending_*` fields: absent on suspend and resume, and where the change keeps a value).
_LIFECYCLE = (
    *_HEAD,
    _f("changed_at", TIME),
    _f("client", TEXT),
    _f("actor", TEXT),
    _f("reason", TEXT),
    _f("jackpot_group", TEXT),
    _f("action", TEXT),
    _f("pending_contribution_rate", RATE, True),
    _f("pending_seed_amount", INT, True),
    _f("pending_max_amount", INT, True),
    _f("pending_clear_max_amount", INT, True),
    # The reserve and overflow (migration 0014), where the scheduled change sets them.
    _x("pending_reserve_rate", RATE),
    _x("pending_overflow_policy", TEXT),
    _x("pending_overflow_target", TEXT),
)

SCHEMAS: Mapping[EventType, tuple[Field, ...]] = {
    EventType.CONTRIBUTION: (
        *_HEAD,
        _f("created_at", TIME),
        *_KEYED,
        _f("game_id", TEXT),
        _f("wager_amount", INT),
        *_POOL_SHARE,
        *_POOL_METERS,
    ),
    EventType.WIN: (
        *_HEAD,
        _f("created_at", TIME),
        *_KEYED,
        _f("jackpot_group", TEXT),
        _f("game_id", TEXT),
        _f("user_id", UUID),
        _f("requested_amount", INT, True),
        _f("amount", INT),
        _f("pool_before", INT),
        _f("seed_top_up", INT),
        _f("pool_after", INT),
        _x("reserve_top_up", INT),
    ),
    EventType.SEED_FUNDING: (
        *_HEAD,
        _f("created_at", TIME),
        _f("jackpot_group", TEXT),
        _f("amount", INT),
        _f("reason", TEXT),
        _f("win_id", INT, True),
        _x("source", TEXT),
    ),
    EventType.CONFIG_CHANGE: (
        *_HEAD,
        _f("changed_at", TIME),
        _f("client", TEXT, True),
        _f("actor", TEXT),
        _f("reason", TEXT),
        _f("jackpot_group", TEXT),
        *_CONFIG,
        *_CONFIG_METERS,
    ),
    EventType.POOL_LIFECYCLE: _LIFECYCLE,
}

# Where each event type's extension begins (its number of first fields). The extension is
# encoded whole when any of its fields is present, and not at all when none is: a row
# written before the extension keeps the bytes it had.
EXTENSION_FROM: Mapping[EventType, int] = {
    event: sum(1 for f in fields if not f.extension) for event, fields in SCHEMAS.items()
}

# The table each event type's rows live in.
TABLES: Mapping[EventType, str] = {
    EventType.CONTRIBUTION: "contributions",
    EventType.WIN: "wins",
    EventType.SEED_FUNDING: "seed_fundings",
    EventType.CONFIG_CHANGE: "config_audit",
    EventType.POOL_LIFECYCLE: "pool_lifecycle",
}


class LeafEncodingError(ValueError):
    """A value that has no canonical text for its field (wrong type, missing, malformed)."""


def canonical_text(kind: FieldKind, value: object) -> str:
    """The one text a value has for its kind."""
    if kind is FieldKind.INT and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if kind is FieldKind.RATE and isinstance(value, Decimal | str):
        rate = Decimal(value)
        quantized = rate.quantize(Decimal(1).scaleb(-RATE_PLACES))
        if quantized != rate or not rate.is_finite():
            raise LeafEncodingError(f"rate {value} has more than {RATE_PLACES} places")
        return f"{quantized:.{RATE_PLACES}f}"
    if kind is FieldKind.TEXT and isinstance(value, str):
        return value
    if kind is FieldKind.TIME and isinstance(value, datetime):
        if value.tzinfo is None:
            raise LeafEncodingError("a time without a zone is ambiguous")
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if kind is FieldKind.UUID and isinstance(value, uuid.UUID | str):
        return str(uuid.UUID(str(value)))
    if kind is FieldKind.HEX and isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    raise LeafEncodingError(f"{type(value).__name__} is not a {kind.value}")


def canonical_fields(event: EventType, values: Mapping[str, object]) -> dict[str, str | None]:
    """Each field of the event's schema as its canonical text (None: absent)."""
    out: dict[str, str | None] = {}
    for field in SCHEMAS[event]:
        if field.name not in values and not field.extension:
            raise LeafEncodingError(f"{TABLES[event]}: field {field.name} is missing")
        value = values.get(field.name)
        if value is None:
            if not field.nullable:
                raise LeafEncodingError(f"{TABLES[event]}: field {field.name} may not be absent")
            out[field.name] = None
        else:
            try:
                out[field.name] = canonical_text(field.kind, value)
            except (LeafEncodingError, ValueError, ArithmeticError) as exc:
                raise LeafEncodingError(f"{TABLES[event]}: field {field.name}: {exc}") from exc
    return out


def encode_texts(event: EventType, texts: Mapping[str, str | None]) -> bytes:
    """The leaf bytes from canonical texts (as canonical_fields gives, or an export holds)."""
    parts = [bytes((VERSION, int(event)))]
    fields = SCHEMAS[event]
    if all(texts.get(f.name) is None for f in fields[EXTENSION_FROM[event] :]):
        fields = fields[: EXTENSION_FROM[event]]
    for field in fields:
        text = texts[field.name]
        if text is None:
            parts.append(struct.pack(">I", ABSENT))
        else:
            data = text.encode("utf-8")
            parts.append(struct.pack(">I", len(data)) + data)
    return b"".join(parts)


_LENGTH = struct.Struct(">I").pack
_ABSENT_FIELD = _LENGTH(ABSENT)


@functools.lru_cache(maxsize=4096)
def _time_text(value: datetime) -> str:
    # Rows of one transaction share their time: each is formatted once.
    return canonical_text(FieldKind.TIME, value)


def _rate_text(value: object) -> str:
    if (
        isinstance(value, Decimal)
        and value.is_finite()
        and value.as_tuple().exponent == -RATE_PLACES
    ):
        return format(value, "f")  # as the database returns numeric(12, 10): already canonical
    return canonical_text(FieldKind.RATE, value)


def _int_text(value: object) -> str:
    if type(value) is int:
        return str(value)
    return canonical_text(FieldKind.INT, value)


def _text_text(value: object) -> str:
    if type(value) is str:
        return value
    return canonical_text(FieldKind.TEXT, value)


def _of_kind(kind: FieldKind) -> Callable[[object], str]:
    return lambda value: canonical_text(kind, value)


_FAST: Mapping[FieldKind, Callable[[Any], str]] = {
    FieldKind.INT: _int_text,
    FieldKind.RATE: _rate_text,
    FieldKind.TEXT: _text_text,
    FieldKind.TIME: lambda value: (
        _time_text(value) if isinstance(value, datetime) else canonical_text(FieldKind.TIME, value)
    ),
    FieldKind.UUID: _of_kind(FieldKind.UUID),
    FieldKind.HEX: _of_kind(FieldKind.HEX),
}


def encode_leaf(event: EventType, values: Mapping[str, object]) -> bytes:
    """The leaf bytes of one ledger event from its row's values: encode_texts of
    canonical_fields, in one pass (the audit re-encodes every row it rebuilds). The
    extension fields may be missing (absent); they are encoded only when one is present."""
    head, plan, extension = _PLANS[event]
    parts = [head]
    _encode_fields(event, plan, values, parts, required=True)
    if extension and any(values.get(name) is not None for name, _, _ in extension):
        _encode_fields(event, extension, values, parts, required=False)
    return b"".join(parts)


_Plan = tuple[tuple[str, Callable[[Any], str], bool], ...]


def _encode_fields(
    event: EventType,
    plan: _Plan,
    values: Mapping[str, object],
    parts: list[bytes],
    *,
    required: bool,
) -> None:
    append = parts.append
    for name, text_of, nullable in plan:
        if name not in values and required:
            raise LeafEncodingError(f"{TABLES[event]}: field {name} is missing")
        value = values.get(name)
        if value is None:
            if not nullable:
                raise LeafEncodingError(f"{TABLES[event]}: field {name} may not be absent")
            append(_ABSENT_FIELD)
            continue
        try:
            data = text_of(value).encode("utf-8")
        except (LeafEncodingError, ValueError, ArithmeticError) as exc:
            raise LeafEncodingError(f"{TABLES[event]}: field {name}: {exc}") from exc
        append(_LENGTH(len(data)))
        append(data)


# Per event type: its first two bytes, and (name, text function, nullable) per field: its
# first fields, then its extension's.
_PLANS: Mapping[EventType, tuple[bytes, _Plan, _Plan]] = {
    event: (
        bytes((VERSION, int(event))),
        tuple((f.name, _FAST[f.kind], f.nullable) for f in fields if not f.extension),
        tuple((f.name, _FAST[f.kind], f.nullable) for f in fields if f.extension),
    )
    for event, fields in SCHEMAS.items()
}


def decode_leaf(leaf: bytes) -> tuple[EventType, dict[str, str | None]]:
    """The event type and canonical texts a leaf holds; refuses anything not canonical."""
    if len(leaf) < 2 or leaf[0] != VERSION:
        raise LeafEncodingError("not a version 1 leaf")
    try:
        event = EventType(leaf[1])
    except ValueError as exc:
        raise LeafEncodingError(f"unknown event type {leaf[1]}") from exc
    texts: dict[str, str | None] = {}
    at = 2
    extended = False
    for number, field in enumerate(SCHEMAS[event]):
        if number == EXTENSION_FROM[event]:
            if at == len(leaf):  # no extension
                texts |= {f.name: None for f in SCHEMAS[event][number:]}
                break
            extended = True
        if at + 4 > len(leaf):
            raise LeafEncodingError(f"leaf ends before field {field.name}")
        (length,) = struct.unpack_from(">I", leaf, at)
        at += 4
        if length == ABSENT:
            texts[field.name] = None
            continue
        if at + length > len(leaf):
            raise LeafEncodingError(f"field {field.name} runs past the leaf's end")
        texts[field.name] = leaf[at : at + length].decode("utf-8")
        at += length
    if at != len(leaf):
        raise LeafEncodingError("bytes after the last field")
    extension = SCHEMAS[event][EXTENSION_FROM[event] :]
    if extended and all(texts[f.name] is None for f in extension):
        raise LeafEncodingError("an extension whose fields are all absent is not canonical")
    return event, texts
