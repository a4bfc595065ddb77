"""scripts/proto_breaking.py: the proto against the previous release's. Today's passes; each
kind of breaking edit of today's descriptors fails, naming what broke; additions pass."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from scripts import proto_breaking

Edit = Callable[[descriptor_pb2.FileDescriptorProto], None]


def current() -> descriptor_pb2.FileDescriptorSet:
    return proto_breaking.read_set(
        (proto_breaking.ROOT / proto_breaking.DESCRIPTOR_SET).read_bytes()
    )


def message(file: descriptor_pb2.FileDescriptorProto, name: str) -> descriptor_pb2.DescriptorProto:
    (found,) = [m for m in file.message_type if m.name == name]
    return found


def field(
    file: descriptor_pb2.FileDescriptorProto, owner: str, name: str
) -> descriptor_pb2.FieldDescriptorProto:
    (found,) = [f for f in message(file, owner).field if f.name == name]
    return found


def remove_field(file: descriptor_pb2.FileDescriptorProto) -> None:
    fields = message(file, "Pool").field
    fields.remove(field(file, "Pool", "current_amount"))


def renumber_field(file: descriptor_pb2.FileDescriptorProto) -> None:
    field(file, "WinRequest", "win_amount").number = 99


def retype_field(file: descriptor_pb2.FileDescriptorProto) -> None:
    field(
        file, "ContributeRequest", "wager_amount"
    ).type = descriptor_pb2.FieldDescriptorProto.TYPE_INT32


def rename_field(file: descriptor_pb2.FileDescriptorProto) -> None:
    target = field(file, "ContributeRequest", "game_id")
    target.name, target.json_name = "game", "game"


def remove_rpc(file: descriptor_pb2.FileDescriptorProto) -> None:
    methods = file.service[0].method
    (win,) = [m for m in methods if m.name == "Win"]
    methods.remove(win)


def remove_enum_value(file: descriptor_pb2.FileDescriptorProto) -> None:
    (groups,) = [e for e in file.enum_type if e.name == "JackpotGroup"]
    groups.value.pop()


def move_rest_path(file: descriptor_pb2.FileDescriptorProto) -> None:
    (pools,) = [m for m in file.service[0].method if m.name == "GetPools"]
    pools.options.Extensions[proto_breaking.HTTP_RULE].get = "/api/v2/pools"


def remove_message(file: descriptor_pb2.FileDescriptorProto) -> None:
    file.message_type.remove(message(file, "GroupAmount"))


def make_optional(file: descriptor_pb2.FileDescriptorProto) -> None:
    """`int64 wager_amount` -> `optional int64 wager_amount` (as protoc writes it: a
    synthetic oneof of its own)."""
    owner = message(file, "ContributeRequest")
    owner.oneof_decl.add(name="_wager_amount")
    target = field(file, "ContributeRequest", "wager_amount")
    target.proto3_optional = True
    target.oneof_index = len(owner.oneof_decl) - 1


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (remove_field, "jackpot.v1.Pool: field 2 (current_amount) removed"),
        (renumber_field, "jackpot.v1.WinRequest: field 4 (win_amount) removed"),
        (
            retype_field,
            "jackpot.v1.ContributeRequest: field 2 (wager_amount) type 'TYPE_INT64'"
            " became 'TYPE_INT32'",
        ),
        (rename_field, "jackpot.v1.ContributeRequest: field 1 (game_id) name 'game_id'"),
        (remove_rpc, "rpc jackpot.v1.JackpotService.Win removed"),
        (remove_enum_value, "jackpot.v1.JackpotGroup: value JACKPOT_GROUP_MEGA removed"),
        (move_rest_path, "rpc jackpot.v1.JackpotService.GetPools: its HTTP rule"),
        (remove_message, "message jackpot.v1.GroupAmount removed"),
        (
            make_optional,
            "jackpot.v1.ContributeRequest: field 2 (wager_amount) explicit presence"
            " (proto3 optional) False became True",
        ),
    ],
)
def test_a_breaking_edit_fails_naming_it(edit: Edit, expected: str) -> None:
    old, new = current(), current()
    edit(new.file[0])
    problems = proto_breaking.breaking_changes(old, new)
    assert any(p.startswith(expected) for p in problems), problems


def test_additions_pass() -> None:
    old, new = current(), current()
    pool = message(new.file[0], "Pool")
    pool.field.add(
        name="added_later",
        json_name="addedLater",
        number=500,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    new.file[0].message_type.add(name="AnotherMessage")
    assert proto_breaking.breaking_changes(old, new) == []
    # ...and the same edit the other way round (the field dropped) is a break.
    assert proto_breaking.breaking_changes(new, old) == [
        "jackpot.v1.Pool: field 500 (added_later) removed",
        "message jackpot.v1.AnotherMessage removed",
    ]


def test_todays_proto_keeps_the_previous_releases_contract() -> None:
    commit = proto_breaking.previous_release()
    known = subprocess.run(
        ["git", "-C", str(proto_breaking.ROOT), "cat-file", "-e", f"{commit}^{{commit}}"],
        check=False,
    )
    if known.returncode != 0:
        pytest.skip("the previous release is not in this clone's history")
    done = subprocess.run(
        [sys.executable, str(proto_breaking.ROOT / "scripts" / "proto_breaking.py")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "no breaking change" in done.stdout


def test_removing_optional_is_a_break_too() -> None:
    with_optional, plain = current(), current()
    make_optional(with_optional.file[0])
    assert proto_breaking.breaking_changes(with_optional, plain) == [
        "jackpot.v1.ContributeRequest: field 2 (wager_amount) explicit presence"
        " (proto3 optional) True became False"
    ]


def test_the_previous_release_file_may_indent_its_comments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = "549d4a773332614d16e3e0086b0d1af38d0ec6df"
    release = tmp_path / "PREVIOUS_RELEASE"
    release.write_text(f"  # the release before this one\n\n   {commit}  \n# later\n")
    monkeypatch.setattr(proto_breaking, "PREVIOUS_RELEASE", release)
    # Before: the indented comment line was taken for the commit.
    assert proto_breaking.previous_release() == commit
