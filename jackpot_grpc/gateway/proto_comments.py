"""The proto files' comments, by element: read from the descriptor set `make generate`
writes with source info (generated/jackpot/v1/jackpot.binpb, shipped as package data).

Keys are full names: `jackpot.v1.Pool` (message), `jackpot.v1.Pool.max_amount` (field),
`jackpot.v1.JackpotService.Contribute` (method), `jackpot.v1.JackpotGroup` (enum),
`jackpot.v1.JackpotGroup.JACKPOT_GROUP_MINOR` (enum value).
"""

from __future__ import annotations

import functools
import importlib.resources
import textwrap
from collections.abc import Iterator

from google.protobuf import descriptor_pb2

DESCRIPTOR_SETS = (("jackpot.v1", "jackpot.binpb"),)  # (package, resource)

# FileDescriptorProto / DescriptorProto field numbers, as SourceCodeInfo paths use them.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _NESTED_ENUM, _VALUE, _METHOD = 2, 3, 4, 2, 2

Path = tuple[int, ...]


def _text(location: descriptor_pb2.SourceCodeInfo.Location) -> str:
    raw = location.leading_comments or location.trailing_comments
    return textwrap.dedent(raw).strip()


def _messages(
    messages: list[descriptor_pb2.DescriptorProto], prefix: str, path: Path
) -> Iterator[tuple[Path, str]]:
    for i, message in enumerate(messages):
        name, here = f"{prefix}.{message.name}", (*path, i)
        yield here, name
        for j, field in enumerate(message.field):
            yield (*here, _FIELD, j), f"{name}.{field.name}"
        yield from _messages(list(message.nested_type), name, (*here, _NESTED))
        yield from _enums(list(message.enum_type), name, (*here, _NESTED_ENUM))


def _enums(
    enums: list[descriptor_pb2.EnumDescriptorProto], prefix: str, path: Path
) -> Iterator[tuple[Path, str]]:
    for i, enum in enumerate(enums):
        name, here = f"{prefix}.{enum.name}", (*path, i)
        yield here, name
        for j, value in enumerate(enum.value):
            yield (*here, _VALUE, j), f"{name}.{value.name}"


def file_comments(file: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    names: dict[Path, str] = {}
    package = file.package
    names.update(_messages(list(file.message_type), package, (_MESSAGE,)))
    names.update(_enums(list(file.enum_type), package, (_ENUM,)))
    for i, service in enumerate(file.service):
        name = f"{package}.{service.name}"
        names[(_SERVICE, i)] = name
        for j, method in enumerate(service.method):
            names[(_SERVICE, i, _METHOD, j)] = f"{name}.{method.name}"
    comments: dict[str, str] = {}
    for location in file.source_code_info.location:
        element = names.get(tuple(location.path))
        text = _text(location)
        if element is not None and text:
            comments[element] = text
    return comments


@functools.cache
def comments() -> dict[str, str]:
    """Every documented element of the shipped descriptor sets (empty if none is shipped)."""
    found: dict[str, str] = {}
    for package, resource in DESCRIPTOR_SETS:
        try:
            data = importlib.resources.files(package).joinpath(resource).read_bytes()
        except (FileNotFoundError, ModuleNotFoundError):
            continue
        for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
            found.update(file_comments(file))
    return found
