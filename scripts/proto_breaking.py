"""The proto against the previous release's: no breaking change (buf's WIRE_JSON rules).

    python scripts/proto_breaking.py [--against COMMIT]

Reads the descriptor set `make generate` writes (generated/jackpot/v1/jackpot.binpb) here
and at the previous release (deploy/PREVIOUS_RELEASE, or --against: `git show`), and fails
(exit 1, one line per break) when a change would break a client built from the previous
proto, on the wire or in JSON (the REST gateway's):

- a message, enum, service or rpc removed;
- a field removed, or its number given another name (JSON), type, label (cardinality),
  message or enum type, oneof, JSON name, or presence (proto3 `optional` added or
  removed: whether an unset field is left out of JSON or written as its default);
- an enum value removed or renumbered;
- an rpc's request or response type, streaming, or HTTP rule (REST path) changed;
- the package changed.

Additions pass. The checks are those of `buf breaking --against` (categories WIRE and
WIRE_JSON), written over the protobuf descriptors so CI needs no other tool.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

if TYPE_CHECKING:
    from google.protobuf.internal.extension_dict import _ExtensionFieldDescriptor

ROOT = Path(__file__).resolve().parent.parent
DESCRIPTOR_SET = "generated/jackpot/v1/jackpot.binpb"
PREVIOUS_RELEASE = ROOT / "deploy" / "PREVIOUS_RELEASE"

Field = descriptor_pb2.FieldDescriptorProto
Message = descriptor_pb2.DescriptorProto

# The rpc option `google.api.http` (the REST path). googleapis-common-protos' stub types the
# extension as a plain FieldDescriptor, which the Extensions mapping does not accept.
HTTP_RULE = cast(
    "_ExtensionFieldDescriptor[descriptor_pb2.MethodOptions, http_pb2.HttpRule]",
    annotations_pb2.http,
)


def _messages(
    prefix: str, messages: Iterator[Message] | list[Message]
) -> Iterator[tuple[str, Message]]:
    for message in messages:
        name = f"{prefix}.{message.name}"
        yield name, message
        yield from _messages(name, list(message.nested_type))


def _enums(
    prefix: str, file: descriptor_pb2.FileDescriptorProto
) -> dict[str, descriptor_pb2.EnumDescriptorProto]:
    found = {f"{prefix}.{e.name}": e for e in file.enum_type}
    for name, message in _messages(prefix, list(file.message_type)):
        found |= {f"{name}.{e.name}": e for e in message.enum_type}
    return found


def _field_shape(message: Message, field: Field) -> dict[str, object]:
    oneof = (
        message.oneof_decl[field.oneof_index].name
        if field.HasField("oneof_index") and not field.proto3_optional
        else None
    )
    return {
        "name": field.name,
        "json name": field.json_name,
        "type": Field.Type.Name(field.type),
        "label": Field.Label.Name(field.label),
        "type name": field.type_name,
        "oneof": oneof,
        "explicit presence (proto3 optional)": field.proto3_optional,
    }


def _http_rule(method: descriptor_pb2.MethodDescriptorProto) -> bytes:
    options = method.options
    if not options.HasExtension(HTTP_RULE):
        return b""
    return options.Extensions[HTTP_RULE].SerializeToString(deterministic=True)


def breaking_changes(
    old: descriptor_pb2.FileDescriptorSet, new: descriptor_pb2.FileDescriptorSet
) -> list[str]:
    """Every change from `old` to `new` that breaks a client of `old`, one phrase each."""
    problems: list[str] = []
    new_files = {f.name: f for f in new.file}
    for before in old.file:
        after = new_files.get(before.name)
        if after is None:
            problems.append(f"{before.name}: file removed")
            continue
        if before.package != after.package:
            problems.append(f"{before.name}: package {before.package} became {after.package}")
        problems += _file_breaks(before, after)
    return problems


def _file_breaks(
    before: descriptor_pb2.FileDescriptorProto, after: descriptor_pb2.FileDescriptorProto
) -> list[str]:
    problems: list[str] = []
    prefix = before.package
    new_messages = dict(_messages(prefix, list(after.message_type)))
    for name, message in _messages(prefix, list(before.message_type)):
        now = new_messages.get(name)
        if now is None:
            problems.append(f"message {name} removed")
            continue
        fields = {f.number: f for f in now.field}
        for field in message.field:
            moved = fields.get(field.number)
            if moved is None:
                problems.append(f"{name}: field {field.number} ({field.name}) removed")
                continue
            was, is_ = _field_shape(message, field), _field_shape(now, moved)
            for key, value in was.items():
                if is_[key] != value:
                    problems.append(
                        f"{name}: field {field.number} ({field.name}) {key} {value!r}"
                        f" became {is_[key]!r}"
                    )
    new_enums = _enums(prefix, after)
    for name, enum in _enums(prefix, before).items():
        now_enum = new_enums.get(name)
        if now_enum is None:
            problems.append(f"enum {name} removed")
            continue
        numbers = {v.name: v.number for v in now_enum.value}
        for value in enum.value:
            if value.name not in numbers:
                problems.append(f"{name}: value {value.name} removed")
            elif numbers[value.name] != value.number:
                problems.append(
                    f"{name}: value {value.name} renumbered {value.number} -> {numbers[value.name]}"
                )
    new_services = {s.name: s for s in after.service}
    for service in before.service:
        now_service = new_services.get(service.name)
        if now_service is None:
            problems.append(f"service {prefix}.{service.name} removed")
            continue
        methods = {m.name: m for m in now_service.method}
        for method in service.method:
            where = f"{prefix}.{service.name}.{method.name}"
            now_method = methods.get(method.name)
            if now_method is None:
                problems.append(f"rpc {where} removed")
                continue
            for attribute in (
                "input_type",
                "output_type",
                "client_streaming",
                "server_streaming",
            ):
                was_value, is_value = getattr(method, attribute), getattr(now_method, attribute)
                if was_value != is_value:
                    problems.append(f"rpc {where}: {attribute} {was_value} became {is_value}")
            if _http_rule(method) != _http_rule(now_method):
                problems.append(f"rpc {where}: its HTTP rule (REST path) changed")
    return problems


def read_set(data: bytes) -> descriptor_pb2.FileDescriptorSet:
    found = descriptor_pb2.FileDescriptorSet()
    found.ParseFromString(data)
    return found


def previous_release() -> str:
    lines = [line.strip() for line in PREVIOUS_RELEASE.read_text().splitlines()]
    commits = [line for line in lines if line and not line.startswith("#")]
    if not commits:
        raise SystemExit(f"proto-breaking: no commit in {PREVIOUS_RELEASE}")
    return commits[0]


def at_commit(commit: str) -> descriptor_pb2.FileDescriptorSet:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{commit}:{DESCRIPTOR_SET}"],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(
            f"proto-breaking: cannot read {DESCRIPTOR_SET} at {commit}:"
            f" {done.stderr.decode().strip()} (fetch the full history: git fetch --unshallow)"
        )
    return read_set(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="a commit (default: deploy/PREVIOUS_RELEASE)")
    args = parser.parse_args(argv)
    commit = args.against or previous_release()
    problems = breaking_changes(at_commit(commit), read_set((ROOT / DESCRIPTOR_SET).read_bytes()))
    for problem in problems:
        print(f"proto-breaking: {problem}", file=sys.stderr)
    if problems:
        print(
            f"proto-breaking: {len(problems)} breaking change(s) against {commit[:12]}:"
            " proto changes must be additive",
            file=sys.stderr,
        )
        return 1
    print(f"proto-breaking: no breaking change against {commit[:12]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
