"""OpenAPI 3.0 for the gateway, derived from the same route table and message descriptors.

Schemas follow the proto3 JSON mapping the gateway speaks: camelCase properties, 64-bit
integers as strings, enums by name, well-known types in their JSON forms. A field the
gateway emits as `null` when unset (singular messages, `optional` scalars) is `nullable`.
Every operation needs a bearer token (`Authorization: Bearer <token>`, forwarded to gRPC)
of a client holding one of the roles in `x-required-roles` (domain/roles.py), unless
the service runs open (no clients configured; development only).

Descriptions are the proto comments (jackpot_grpc.gateway.proto_comments). A request field
the gateway also reads from a header (Idempotency-Key) is documented as a header parameter.
Errors are a google.rpc.Status whose details carry google.rpc.ErrorInfo (a stable reason),
BadRequest (the fields at fault) or RetryInfo (when to try again).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from jackpot_grpc.domain.roles import roles_for
from jackpot_grpc.gateway.proto_comments import comments
from jackpot_grpc.gateway.routes import Route, message_type
from jackpot_grpc.gateway.transcode import HEADER_FIELDS, null_when_unset

Schema = dict[str, Any]
REF = "#/components/schemas/"
BEARER = "bearerAuth"
_SECURITY_SCHEMES: Schema = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "A client token from `jackpot clients add` (docs/SECURITY.md).",
    }
}
STATUS_SCHEMA = "google.rpc.Status"
_MAX_QUERY_DEPTH = 3

_INT64: Schema = {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
_UINT64: Schema = {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"}
_SCALARS: dict[int, Schema] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_FIXED64: _UINT64,
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
# Well-known types have their own JSON forms (not objects of their fields).
_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    "google.protobuf.DoubleValue": _SCALARS[FieldDescriptor.TYPE_DOUBLE],
    "google.protobuf.FloatValue": _SCALARS[FieldDescriptor.TYPE_FLOAT],
    "google.protobuf.Int64Value": _INT64,
    "google.protobuf.UInt64Value": _UINT64,
    "google.protobuf.Int32Value": _SCALARS[FieldDescriptor.TYPE_INT32],
    "google.protobuf.UInt32Value": _SCALARS[FieldDescriptor.TYPE_UINT32],
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": _SCALARS[FieldDescriptor.TYPE_BYTES],
}
_ANY = _WELL_KNOWN["google.protobuf.Any"]
_TYPE_URL = "type.googleapis.com/"
# The error details the service and the gateway send (google/rpc/error_details.proto).
_ERROR_DETAILS: dict[str, Schema] = {
    "google.rpc.ErrorInfo": {
        "type": "object",
        "description": "Why the call failed, as a stable, machine-readable reason (AIP-193).",
        "required": ["@type"],
        "properties": {
            "@type": {"type": "string", "enum": [_TYPE_URL + "google.rpc.ErrorInfo"]},
            "reason": {"type": "string", "description": "UPPER_SNAKE reason (docs/ERRORS.md)."},
            "domain": {"type": "string", "description": "The reasons' namespace: jackpot.v1."},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "google.rpc.BadRequest": {
        "type": "object",
        "description": "The request fields at fault.",
        "required": ["@type"],
        "properties": {
            "@type": {"type": "string", "enum": [_TYPE_URL + "google.rpc.BadRequest"]},
            "fieldViolations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "field": {"type": "string"},
                        "description": {"type": "string"},
                    },
                },
            },
        },
    },
    "google.rpc.RetryInfo": {
        "type": "object",
        "description": "When the call may be retried (also sent as Retry-After).",
        "required": ["@type"],
        "properties": {
            "@type": {"type": "string", "enum": [_TYPE_URL + "google.rpc.RetryInfo"]},
            "retryDelay": _WELL_KNOWN["google.protobuf.Duration"],
        },
    },
}
_STATUS: Schema = {
    "type": "object",
    "description": (
        "A google.rpc.Status: the gRPC code, a message and typed details. The HTTP status"
        " follows the code (400 INVALID_ARGUMENT/FAILED_PRECONDITION, 401, 403, 404, 409"
        " ABORTED, 429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED, ...)."
    ),
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "integer", "format": "int32", "description": "The gRPC status code."},
        "message": {"type": "string", "description": "For people; branch on ErrorInfo.reason."},
        "details": {
            "type": "array",
            "items": {"anyOf": [*({"$ref": REF + name} for name in _ERROR_DETAILS), _ANY]},
        },
    },
}


class _Components:
    """Collects a component schema for every message and enum reachable from the routes."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {STATUS_SCHEMA: _STATUS, **_ERROR_DETAILS}

    def message(self, descriptor: Descriptor) -> Schema:
        if descriptor.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[descriptor.full_name])
        if descriptor.full_name not in self.schemas:
            self.schemas[descriptor.full_name] = {}  # placeholder: recursion ends at a $ref
            self.schemas[descriptor.full_name] = _described(
                {
                    "type": "object",
                    "properties": {f.json_name: self.property(f) for f in descriptor.fields},
                },
                descriptor.full_name,
            )
        return {"$ref": REF + descriptor.full_name}

    def enum(self, descriptor: EnumDescriptor) -> Schema:
        self.schemas.setdefault(
            descriptor.full_name,
            _described(
                {"type": "string", "enum": [v.name for v in descriptor.values]},
                descriptor.full_name,
            ),
        )
        return {"$ref": REF + descriptor.full_name}

    def value(self, field: FieldDescriptor) -> Schema:
        nested = message_type(field)
        if nested is not None:
            return self.message(nested)
        if field.enum_type is not None:
            return self.enum(field.enum_type)
        return dict(_SCALARS.get(field.type, {}))

    def field(self, field: FieldDescriptor) -> Schema:
        entry = message_type(field)
        if entry is not None and entry.GetOptions().map_entry:
            value = entry.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.value(value)}
        if field.is_repeated:
            return {"type": "array", "items": self.value(field)}
        return self.value(field)

    def property(self, field: FieldDescriptor) -> Schema:
        """A field as it appears in JSON: `null` allowed where an unset field is emitted so."""
        schema = self.field(field)
        schema = _nullable(schema) if null_when_unset(field) else schema
        return _described(schema, field.full_name)


def _described(schema: Schema, full_name: str) -> Schema:
    """The schema with the element's proto comment; a bare `$ref` is wrapped (OpenAPI 3.0
    ignores what stands beside one)."""
    text = comments().get(full_name)
    if not text:
        return schema
    if "$ref" in schema:
        schema = {"allOf": [schema]}
    return {**schema, "description": text}


def _nullable(schema: Schema) -> Schema:
    """OpenAPI 3.0's `nullable`; beside a `$ref` it would be ignored, so the ref is wrapped."""
    if "$ref" in schema:
        return {"allOf": [schema], "nullable": True}
    return {**schema, "nullable": True}


def _query_parameters(
    components: _Components, message: Descriptor, skip: frozenset[str], prefix: str, depth: int
) -> list[Schema]:
    """Scalar and enum fields (nested ones dotted) a GET-style route reads from the query."""
    params: list[Schema] = []
    for field in message.fields:
        if not prefix and field.name in skip:
            continue
        name = f"{prefix}{field.json_name}"
        nested = message_type(field)
        if nested is not None and nested.full_name not in _WELL_KNOWN:
            if not field.is_repeated and depth < _MAX_QUERY_DEPTH:
                params += _query_parameters(components, nested, skip, f"{name}.", depth + 1)
            continue
        schema = components.field(field)
        param: Schema = {"name": name, "in": "query", "required": False, "schema": schema}
        if field.is_repeated:
            param.update(style="form", explode=True)
        params.append(param)
    return params


def _header_parameters(request: Descriptor) -> list[Schema]:
    """Headers the gateway copies into a request field the body left empty."""
    params: list[Schema] = []
    for header, field_name in HEADER_FIELDS.items():
        field = request.fields_by_name.get(field_name)
        if field is None:
            continue
        text = comments().get(field.full_name, "")
        params.append(
            {
                "name": header,
                "in": "header",
                "required": False,
                "description": f"Sets `{field.json_name}` when the body does not. {text}".strip(),
                "schema": {"type": "string"},
            }
        )
    return params


def _json_content(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _describe(method_name: str, roles: list[str]) -> str:
    """The proto comment of the method, then who may call it."""
    needs = f"Needs a client with one of the roles: {', '.join(roles)}."
    comment = comments().get(method_name)
    return f"{comment}\n\n{needs}" if comment else needs


def _operation(components: _Components, route: Route, operation_id: str) -> Schema:
    method = route.method
    request = method.input_type
    parameters: list[Schema] = [
        {"name": p.field_path, "in": "path", "required": True, "schema": {"type": "string"}}
        for p in route.path_params
    ]
    if route.body != "*":
        parameters += _query_parameters(components, request, route.bound_fields, "", 0)
    parameters += _header_parameters(request)
    if route.response_body:
        field = method.output_type.fields_by_name[route.response_body]
        response = components.field(field)
        if field.has_presence and not field.is_repeated:  # unset, it comes out as `null`
            response = _nullable(response)
    else:
        response = components.message(method.output_type)
    roles = roles_for(method.name)
    error = _json_content({"$ref": REF + STATUS_SCHEMA})
    operation: Schema = {
        "operationId": operation_id,
        "tags": [method.containing_service.full_name],
        "summary": f"{method.containing_service.name}.{method.name}",
        "description": _describe(method.full_name, roles),
        "security": [{BEARER: []}],
        "x-required-roles": roles,
        "responses": {
            "200": {"description": "OK", "content": _json_content(response)},
            "401": {
                "description": "No or unknown credentials (`WWW-Authenticate: Bearer`).",
                "content": error,
            },
            "403": {"description": "The client lacks the role this call needs.", "content": error},
            "default": {
                "description": "An error: a google.rpc.Status with an HTTP status per its code.",
                "content": _json_content({"$ref": REF + STATUS_SCHEMA}),
            },
        },
    }
    if route.server_streaming:
        _as_stream(operation, response)
        parameters.append(_LAST_EVENT_ID)
    if parameters:
        operation["parameters"] = parameters
    if route.body:
        body = (
            components.message(request)
            if route.body == "*"
            else components.field(request.fields_by_name[route.body])
        )
        operation["requestBody"] = {"required": True, "content": _json_content(body)}
    return operation


_LAST_EVENT_ID: Schema = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": (
        "Server-Sent Events only: the last `id` a client saw (an EventSource sends it when it"
        " reconnects). The new stream starts from the current state and numbers on from it."
    ),
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}


def _as_stream(operation: Schema, message: Schema) -> None:
    """A server-streaming rpc's 200: newline-delimited JSON (one `{"result": message}` a
    line, an error as the last `{"error": Status}`), or Server-Sent Events when asked for
    with `Accept: text/event-stream` (`id:` the message's sequence, `data:` its JSON)."""
    line: Schema = {
        "type": "object",
        "properties": {"result": message, "error": {"$ref": REF + STATUS_SCHEMA}},
    }
    operation["responses"]["200"] = {
        "description": (
            'A stream: one JSON object a line (`{"result": ...}`; an error after the start'
            ' ends it as `{"error": ...}`), or, with `Accept: text/event-stream`, Server-Sent'
            " Events whose `id` is the message's sequence and whose `data` is its JSON (an"
            " error: `event: error`). Idle SSE streams get `: keepalive` comments."
        ),
        "content": {
            "application/x-ndjson": {"schema": line},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }


def openapi_document(
    routes: Sequence[Route], *, title: str = "Jackpot REST gateway", version: str = "1.0.0"
) -> dict[str, Any]:
    components = _Components()
    paths: dict[str, dict[str, Schema]] = {}
    used_ids: set[str] = set()
    for route in routes:
        base_id = f"{route.method.containing_service.name}_{route.method.name}"
        operation_id, n = base_id, 1
        while operation_id in used_ids:  # additional bindings of one rpc
            n += 1
            operation_id = f"{base_id}{n}"
        used_ids.add(operation_id)
        paths.setdefault(route.openapi_path, {})[route.http_method.lower()] = _operation(
            components, route, operation_id
        )
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "Generated from the services' google.api.http annotations; descriptions are"
                " the proto comments."
            ),
        },
        "paths": paths,
        "security": [{BEARER: []}],
        "components": {"schemas": components.schemas, "securitySchemes": _SECURITY_SCHEMES},
    }
