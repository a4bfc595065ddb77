"""The route table: a function of service descriptors and their `google.api.http` annotations.

Nothing here names a jackpot rpc. An annotated unary or server-streaming rpc gets its
route (a streaming one is answered as Server-Sent Events or newline-delimited JSON); an
unannotated or client-streaming one gets none. Path templates follow google/api/http.proto:
`/v1/{name=shelves/*}/books/{book_id}:verb`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

from google.api import annotations_pb2, http_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message

_VARIABLE = re.compile(r"\{([^{}=]*)(?:=([^{}]*))?\}")
# The stubs type the extension as a plain FieldDescriptor; at run time it is the extension.
HTTP_RULE = cast(Any, annotations_pb2.http)
_FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class PathParam:
    """A `{field.path}` variable of a template, under the name aiohttp matches it as."""

    placeholder: str
    field_path: str


@dataclass(frozen=True)
class Route:
    http_method: str
    template: str  # as written in the annotation
    router_path: str  # the same path in aiohttp's syntax
    openapi_path: str  # the same path in OpenAPI's syntax
    path_params: tuple[PathParam, ...]
    body: str  # "" (no body), "*" (the whole request) or a top-level field name
    response_body: str  # "" (the whole response) or a top-level field name
    method: MethodDescriptor

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def grpc_path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @cached_property
    def request_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.input_type)

    @cached_property
    def response_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.output_type)

    @property
    def bound_fields(self) -> frozenset[str]:
        """Top-level request fields filled from the path or the body, not from the query."""
        bound = {p.field_path.split(".")[0] for p in self.path_params}
        if self.body:
            bound.add(self.body)
        return frozenset(bound)


def message_type(field: FieldDescriptor) -> Descriptor | None:
    """The message a field holds, or None for scalars and enums."""
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return None
    return field.message_type


def resolve_field(message: Descriptor, field_path: str) -> list[FieldDescriptor]:
    """The fields along a dotted path (proto names or JSON names); ValueError if none."""
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for name in field_path.split("."):
        if current is None:
            raise ValueError(f"{field_path!r}: {fields[-1].name} is not a message")
        field = current.fields_by_name.get(name) or next(
            (f for f in current.fields if f.json_name == name), None
        )
        if field is None:
            raise ValueError(f"{field_path!r}: {current.full_name} has no field {name!r}")
        fields.append(field)
        current = None if field.is_repeated else message_type(field)
    return fields


def _segments_regex(segments: str) -> str:
    """`shelves/*/books/**` as a regex: `*` is one path segment, `**` any number of them."""
    parts = []
    for segment in segments.split("/"):
        if segment == "*":
            parts.append("[^/]+")
        elif segment == "**":
            parts.append(".+")
        else:
            parts.append(re.escape(segment))
    return "/".join(parts)


def _literal_to_router(literal: str, wildcards: Iterator[str]) -> str:
    """Bare `*`/`**` segments outside a variable become anonymous aiohttp variables."""
    out = []
    for segment in literal.split("/"):
        if segment in ("*", "**"):
            out.append(f"{{{next(wildcards)}:{_segments_regex(segment)}}}")
        else:
            out.append(segment)
    return "/".join(out)


def parse_template(template: str, request: Descriptor) -> tuple[str, str, tuple[PathParam, ...]]:
    """(aiohttp path, OpenAPI path, variables) of a path template; ValueError when invalid."""
    if not template.startswith("/"):
        raise ValueError(f"path template {template!r} must start with '/'")
    router: list[str] = []
    openapi: list[str] = []
    params: list[PathParam] = []
    wildcards = (f"_w{i}" for i in range(1_000))
    position = 0
    for match in _VARIABLE.finditer(template):
        literal = template[position : match.start()]
        router.append(_literal_to_router(literal, wildcards))
        openapi.append(literal)
        field_path, segments = match.group(1), match.group(2)
        if not _FIELD_PATH.fullmatch(field_path):
            raise ValueError(f"path template {template!r}: bad variable {field_path!r}")
        resolve_field(request, field_path)
        placeholder = f"p{len(params)}"
        regex = _segments_regex(segments) if segments else "[^/]+"
        router.append(f"{{{placeholder}:{regex}}}")
        openapi.append(f"{{{field_path}}}")
        params.append(PathParam(placeholder, field_path))
        position = match.end()
    tail = template[position:]
    if "{" in tail or "}" in tail:
        raise ValueError(f"path template {template!r} has unbalanced braces")
    router.append(_literal_to_router(tail, wildcards))
    openapi.append(tail)
    return "".join(router), "".join(openapi), tuple(params)


def _bindings(rule: http_pb2.HttpRule) -> Iterator[http_pb2.HttpRule]:
    yield rule
    yield from rule.additional_bindings  # these cannot nest further


def _verb_and_template(rule: http_pb2.HttpRule) -> tuple[str, str] | None:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        return None
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    template: str = getattr(rule, kind)
    return kind.upper(), template


def _check_top_level(method: MethodDescriptor, what: str, name: str) -> None:
    if name and name != "*" and name not in method.input_type.fields_by_name:
        raise ValueError(f"{method.full_name}: {what} {name!r} is not a request field")


def routes_for_method(method: MethodDescriptor) -> list[Route]:
    if method.client_streaming:
        return []  # one HTTP request is one request message
    options = method.GetOptions()
    if not options.HasExtension(HTTP_RULE):
        return []
    routes = []
    for rule in _bindings(options.Extensions[HTTP_RULE]):
        verb_template = _verb_and_template(rule)
        if verb_template is None:
            continue
        verb, template = verb_template
        _check_top_level(method, "body", rule.body)
        if rule.response_body and rule.response_body not in method.output_type.fields_by_name:
            raise ValueError(f"{method.full_name}: response_body {rule.response_body!r} unknown")
        router_path, openapi_path, params = parse_template(template, method.input_type)
        routes.append(
            Route(
                http_method=verb,
                template=template,
                router_path=router_path,
                openapi_path=openapi_path,
                path_params=params,
                body=rule.body,
                response_body=rule.response_body,
                method=method,
            )
        )
    return routes


def build_routes(services: Iterable[ServiceDescriptor]) -> list[Route]:
    """Every annotated unary or server-streaming rpc of the given ServiceDescriptors;
    ValueError on a clash."""
    routes: list[Route] = []
    seen: dict[tuple[str, str], str] = {}
    for service in services:
        for method in service.methods:
            for route in routes_for_method(method):
                key = (route.http_method, route.openapi_path)
                if key in seen:
                    raise ValueError(
                        f"{route.http_method} {route.template} is declared by both "
                        f"{seen[key]} and {method.full_name}"
                    )
                seen[key] = method.full_name
                routes.append(route)
    return routes
