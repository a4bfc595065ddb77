"""The proto's JackpotGroup and the domain's Group, each way: the server, the REST gateway's
callers and the operator's commands (smoke, config) read and write the same enum."""

from __future__ import annotations

from jackpot.v1 import jackpot_pb2 as pb

from jackpot_grpc.domain.model import Group

GROUP_TO_PROTO: dict[Group, pb.JackpotGroup.ValueType] = {
    Group.MINOR: pb.JACKPOT_GROUP_MINOR,
    Group.MAJOR: pb.JACKPOT_GROUP_MAJOR,
    Group.MEGA: pb.JACKPOT_GROUP_MEGA,
}
_FROM_PROTO = {v: k for k, v in GROUP_TO_PROTO.items()}


def group_from_proto(value: int) -> Group | None:
    return _FROM_PROTO.get(value)  # type: ignore[call-overload, no-any-return]


def group_to_proto(group: Group) -> pb.JackpotGroup.ValueType:
    return GROUP_TO_PROTO[group]
