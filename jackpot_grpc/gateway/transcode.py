"""HTTP request → protobuf request, protobuf response → JSON, HTTP headers → gRPC metadata.

JSON follows the proto3 mapping (google.protobuf.json_format): camelCase or proto names in,
camelCase out, unset fields emitted, int64 as strings. Unset message fields and unset
`optional` scalars come out as `null` (see `null_when_unset`). Stricter than grpc-gateway's
defaults, so a typo can never pass as "unset": an unknown field in the body or the query is
400 naming it, and an enum takes its value's name (`JACKPOT_GROUP_MINOR`), that name
without the enum's prefix in any case (`minor`), or its number.
(Long because it is the whole mapping, both directions, in one place: a rule that differs
between request and response parsing would be a contract bug.)
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, cast

from google.protobuf import descriptor_pb2, json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from jackpot_grpc.gateway.http_errors import bad_request
from jackpot_grpc.gateway.routes import Route, message_type, resolve_field

# Headers that set a request field. A route whose request lacks the field refuses the
# header (it would be silently ignored); a body that sets the field to another value too.
HEADER_FIELDS: dict[str, str] = {"Idempotency-Key": "idempotency_key"}
# Headers forwarded as gRPC metadata under their lowercase name (auth, W3C trace context).
FORWARDED_HEADERS = ("Authorization", "traceparent", "tracestate", "X-Request-Id")
TRACE_CONTEXT_HEADERS = frozenset({"traceparent", "tracestate"})
# grpc-gateway's convention: `Grpc-Metadata-Foo: bar` arrives as metadata `foo: bar`.
METADATA_PREFIX = "grpc-metadata-"


class Query(Protocol):
    """A query string with repeated keys (aiohttp's request.query is one)."""

    def keys(self) -> Iterable[str]: ...

    def getall(self, key: str) -> list[str]: ...


_METADATA_KEY = re.compile(r"[0-9a-z_.\-]+")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
_FAILED_FIELD = re.compile(r"Failed to parse (\S+) field")
_TRUE, _FALSE = ("true", "1"), ("false", "0")
_UPPER_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise bad_request(f"invalid JSON body: key {key!r} appears twice", [(key, "repeated")])
        result[key] = value
    return result


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except UnicodeDecodeError:
        raise bad_request("invalid JSON body: not UTF-8") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise bad_request(f"invalid JSON body: {exc}") from None


def _field_named(message: Descriptor, key: str) -> FieldDescriptor | None:
    field: FieldDescriptor | None = message.fields_by_name.get(key)
    if field is None:
        field = next((f for f in message.fields if f.json_name == key), None)
    return field


@functools.cache
def _enum_names(enum: EnumDescriptor) -> tuple[tuple[str, str], ...]:
    """(value name, short name) of each value. The short name drops the enum's prefix,
    its name in UPPER_SNAKE as the protobuf style guide has it (JackpotGroup →
    JACKPOT_GROUP_), and is lower case. The zero (UNSPECIFIED) value is left out: it means
    "not set"."""
    prefix = _UPPER_SNAKE.sub("_", enum.name).upper() + "_"
    return tuple(
        (v.name, v.name.removeprefix(prefix).lower()) for v in enum.values if v.number != 0
    )


@functools.cache
def _enum_spellings(enum: EnumDescriptor) -> dict[str, str]:
    """Every accepted spelling, lower-cased → the value name json_format parses (the zero
    value's name too: it reaches the service as "unset", which answers for it)."""
    spellings = {v.name.lower(): v.name for v in enum.values}
    for name, short in _enum_names(enum):
        spellings.setdefault(short, name)
    return spellings


def enum_choices(enum: EnumDescriptor) -> str:
    """The wording of a bad enum value: every spelling the gateway accepts."""
    names = _enum_names(enum)
    listed = ", ".join([short for _, short in names] + [name for name, _ in names])
    numbers = ", ".join(str(enum.values_by_name[name].number) for name, _ in names)
    return f"must be one of {listed} (any case), or its number ({numbers})"


def _enum_value(field: FieldDescriptor, value: Any, path: str) -> tuple[Any, list[tuple[str, str]]]:
    """An enum's JSON value as json_format takes it, or the problem with it."""
    enum = field.enum_type
    if isinstance(value, bool):  # json_format would read true as 1
        return value, [(path, "must not be a boolean")]
    if not isinstance(value, str) or enum is None:
        return value, []  # numbers: json_format checks them
    spellings = _enum_spellings(enum)
    name = spellings.get(value.lower())
    if name is None:
        return value, [(path, enum_choices(enum))]
    return name, []


def _bool_misuse(field: FieldDescriptor, value: Any, path: str) -> list[tuple[str, str]]:
    """JSON true/false where a number or enum belongs (Python treats bool as int)."""
    if isinstance(value, bool) and field.type != FieldDescriptor.TYPE_BOOL:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return []  # google.protobuf.Value and BoolValue take booleans; json_format decides
        return [(path, "must not be a boolean")]
    return []


def check_json_types(message: Descriptor, value: Any, path: str = "") -> list[tuple[str, str]]:
    """Problems json_format lets through (or words badly), as (field path, description)
    pairs: unknown fields, booleans where numbers belong, enum values it does not know.
    Enum values given in a short spelling are rewritten in place to their value names."""
    if not isinstance(value, dict) or message.file.package == _OPAQUE_PACKAGE:
        return []  # well-known types have JSON forms of their own: json_format checks them
    problems: list[tuple[str, str]] = []
    for key, item in value.items():
        field = _field_named(message, key)
        where = f"{path}.{key}" if path else key
        if field is None:
            problems.append((where, "unknown field"))
            continue
        if item is None:
            continue
        if field.type == FieldDescriptor.TYPE_ENUM:
            if field.is_repeated and isinstance(item, list):
                for index, element in enumerate(item):
                    item[index], found = _enum_value(field, element, f"{where}[{index}]")
                    problems += found
            elif not field.is_repeated:
                value[key], found = _enum_value(field, item, where)
                problems += found
            continue
        entry = message_type(field)
        if entry is not None and entry.GetOptions().map_entry:
            value_field = entry.fields_by_name["value"]
            if isinstance(item, dict):
                for map_key, map_value in item.items():
                    problems += _check_value(value_field, map_value, f"{where}[{map_key}]")
            continue
        if field.is_repeated and isinstance(item, list):
            for index, element in enumerate(item):
                problems += _check_value(field, element, f"{where}[{index}]")
            continue
        problems += _check_value(field, item, where)
    return problems


_INTEGER_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_SFIXED32,
    }
)
# ASCII only: `[0-9]`, not `\d`, which matches every script's digits.
_INTEGER_TEXT = re.compile(r"-?[0-9]+")
INTEGER_GRAMMAR = "must be an integer: a JSON integer or a string of digits 0-9 with an optional -"


def _integer_misuse(field: FieldDescriptor, value: Any, path: str) -> list[tuple[str, str]]:
    """Money is int64: json_format would take 900719925474099.99 (a float that rounds to
    ...100.0), 1e3, and any string int() reads ("1_000", "+1000", "\t1000", full-width or
    Arabic-Indic digits). Only a JSON integer (read exactly, whatever its size) or a
    string of ASCII digits with an optional leading `-` is an integer here."""
    if field.type not in _INTEGER_TYPES or isinstance(value, bool):
        return []
    if isinstance(value, int):
        return []
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        return []
    if isinstance(value, float | str):
        return [(path, INTEGER_GRAMMAR)]
    return []  # lists, objects: json_format words those


def _check_value(field: FieldDescriptor, value: Any, path: str) -> list[tuple[str, str]]:
    nested = message_type(field)
    if nested is not None:
        return check_json_types(nested, value, path)
    return _bool_misuse(field, value, path) + _integer_misuse(field, value, path)


def _parse_into(route: Route, message: Message, data: dict[str, Any]) -> None:
    if not data:
        return
    try:
        problems = check_json_types(route.method.input_type, data)
    except RecursionError:
        raise bad_request("the JSON body is nested too deeply") from None
    if problems:
        field, description = problems[0]
        raise bad_request(f"invalid value for field {field}: {description}", problems)
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=False)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        text = str(exc).replace("..", ".")
        field = ".".join(_FAILED_FIELD.findall(text))
        reason = text.rsplit(" field: ", 1)[-1]
        raise bad_request(text, [(field, reason)] if field else []) from None


def _set_path(target: dict[str, Any], fields: list[FieldDescriptor], value: Any) -> None:
    for field in fields[:-1]:
        target = target.setdefault(field.json_name, {})
    target[fields[-1].json_name] = value


def _query_value(field: FieldDescriptor, raw: str, name: str) -> Any:
    if field.type == FieldDescriptor.TYPE_BOOL:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise bad_request(f"query parameter {name!r} must be true or false", [(name, "not bool")])
    return raw  # json_format parses numbers, enums, timestamps... from their string forms


def _query_dict(route: Route, query: Query) -> dict[str, Any]:
    data: dict[str, Any] = {}
    descriptor = route.method.input_type
    for name in set(query.keys()):
        try:
            fields = resolve_field(descriptor, name)
        except ValueError:
            raise bad_request(
                f"unknown query parameter {name!r}", [(name, "unknown field")]
            ) from None
        if fields[0].name in route.bound_fields:
            continue  # the path's value wins (grpc-gateway's rule)
        leaf, values = fields[-1], query.getall(name)
        if leaf.is_repeated:
            _set_path(data, fields, [_query_value(leaf, v, name) for v in values])
        elif len(values) > 1:
            raise bad_request(
                f"query parameter {name!r} given more than once", [(name, "repeated")]
            )
        else:
            _set_path(data, fields, _query_value(leaf, values[0], name))
    return data


def build_request(
    route: Route,
    *,
    body: bytes,
    query: Query,
    path_params: Mapping[str, str],
    headers: Mapping[str, str],
) -> Message:
    """The gRPC request: body first, then query parameters, then path variables (which win)."""
    message = route.request_class()
    if route.body and body.strip():
        data = _load_json(body)
        if route.body == "*":
            if not isinstance(data, dict):
                raise bad_request("the JSON body must be an object")
            _parse_into(route, message, data)
        else:
            field = route.method.input_type.fields_by_name[route.body]
            _parse_into(route, message, {field.json_name: data})
    if route.body != "*":
        _parse_into(route, message, _query_dict(route, query))
    elif query:
        name = next(iter(query.keys()))
        raise bad_request(
            f"unknown query parameter {name!r}: this route takes its request in the body",
            [(name, "unknown field")],
        )
    from_path: dict[str, Any] = {}
    for param in route.path_params:
        _set_path(
            from_path,
            resolve_field(route.method.input_type, param.field_path),
            path_params[param.placeholder],
        )
    _parse_into(route, message, from_path)
    _fill_from_headers(message, headers)
    return message


def _fill_from_headers(message: Message, headers: Mapping[str, str]) -> None:
    """Set each header's field, exactly as sent (the service checks it like the body's)."""
    for header, field_name in HEADER_FIELDS.items():
        value = headers.get(header)
        if value is None:
            continue
        field = message.DESCRIPTOR.fields_by_name.get(field_name)
        if field is None or field.type != FieldDescriptor.TYPE_STRING or field.is_repeated:
            raise bad_request(
                f"the {header} header is not accepted here: this request has no"
                f" {field_name} (it would be ignored)",
                [(header, "not accepted on this route")],
            )
        current = getattr(message, field_name)
        if current and current != value:
            raise bad_request(
                f"the {header} header and the body's {field.json_name} disagree",
                [(header, f"differs from {field.json_name} in the body")],
            )
        setattr(message, field_name, value)


def forwarded_metadata(
    headers: Mapping[str, str], *, trace_context: bool = True
) -> tuple[tuple[str, str], ...]:
    """gRPC metadata from the headers the service reads; values gRPC cannot carry are dropped.

    `trace_context=False` leaves traceparent/tracestate out: a traced gateway sends its own.
    """
    metadata: list[tuple[str, str]] = []
    for header in FORWARDED_HEADERS:
        if not trace_context and header in TRACE_CONTEXT_HEADERS:
            continue
        value = headers.get(header)
        if value is not None:
            metadata.append((header.lower(), value))
    for header, value in headers.items():
        if header.lower().startswith(METADATA_PREFIX):
            metadata.append((header.lower()[len(METADATA_PREFIX) :], value))
    return tuple(
        (key, value)
        for key, value in metadata
        if _METADATA_KEY.fullmatch(key)
        and not key.endswith("-bin")
        and not key.startswith("grpc-")
        and key != "x-forwarded-for"  # the gateway's own word on who called (app.py)
        and _PRINTABLE_ASCII.fullmatch(value)
    )


# json_format renders google.protobuf's well-known types in their own JSON forms (Timestamp
# and Duration as strings, wrappers as scalars, Struct/Value/Any as free JSON): their fields
# are not properties of the JSON, so nothing is added inside them.
_OPAQUE_PACKAGE = "google.protobuf"


@functools.cache
def _proto3_optional(message: Descriptor) -> frozenset[str]:
    """Names of the message's proto3 `optional` fields (each is alone in a synthetic oneof)."""
    proto = descriptor_pb2.DescriptorProto()
    message.CopyToProto(proto)
    return frozenset(f.name for f in proto.field if f.proto3_optional)


def _in_real_oneof(field: FieldDescriptor) -> bool:
    return field.containing_oneof is not None and field.name not in _proto3_optional(
        field.containing_type
    )


def null_when_unset(field: FieldDescriptor) -> bool:
    """Whether response JSON carries the field as `null` when it is unset.

    json_format with always_print_fields_with_no_presence already prints every field
    without presence (scalars, enums, repeated, maps) at its default; what it leaves out is
    fields with presence: singular messages, `optional` scalars and oneof members. The first
    two become `null` (grpc-gateway's EmitUnpopulated does so for messages; proto3
    `optional` scalars are nulled here too, so a client sees every declared field). Members
    of a real oneof are not: only the set member is emitted, and a oneof with none set emits
    nothing, as protojson's EmitUnpopulated does; nulls for every member would read as
    several alternatives present at once, and absence already says "none of them".
    """
    return field.has_presence and not field.is_repeated and not _in_real_oneof(field)


def _with_nulls(message: Descriptor, data: dict[str, Any]) -> dict[str, Any]:
    """MessageToDict's output with every unset nullable field added as None, recursively."""
    if message.file.package == _OPAQUE_PACKAGE:
        return data
    result: dict[str, Any] = {}
    for field in message.fields:
        key = field.json_name
        if key not in data:
            if null_when_unset(field):
                result[key] = None
            continue
        value = result[key] = data[key]
        nested = message_type(field)
        if nested is None or value is None:
            continue
        if nested.GetOptions().map_entry:
            nested = message_type(nested.fields_by_name["value"])
            if nested is not None and isinstance(value, dict):
                result[key] = {k: _nested(nested, v) for k, v in value.items()}
        elif field.is_repeated:
            if isinstance(value, list):
                result[key] = [_nested(nested, v) for v in value]
        else:
            result[key] = _nested(nested, value)
    for key, value in data.items():  # anything json_format printed that is not a field
        result.setdefault(key, value)
    return result


def _nested(message: Descriptor, value: Any) -> Any:
    return _with_nulls(message, value) if isinstance(value, dict) else value


def response_json(route: Route, message: Message) -> str:
    data = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    data = _with_nulls(cast(Descriptor, message.DESCRIPTOR), data)
    if route.response_body:
        field = message.DESCRIPTOR.fields_by_name[route.response_body]
        return json.dumps(data.get(field.json_name))
    return json.dumps(data)
