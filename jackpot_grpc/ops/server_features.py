"""What the server under test understands, asked of the server itself before relying on it.

A request field the server does not know is dropped without a word (proto3 keeps it as an
unknown field): a server from before validate_only would apply a "dry run" for real. So a
command that sends validate_only first reads the server's own descriptors over gRPC
reflection (open, like health) and refuses to send when the field is not there.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from jackpot_grpc.ops.ops_error import OpsError

# The requests that take validate_only (jackpot/v1/jackpot.proto).
DRY_RUN_REQUESTS = (
    "jackpot.v1.ContributeRequest",
    "jackpot.v1.ContributeBatchRequest",
    "jackpot.v1.WinRequest",
    "jackpot.v1.UpdateConfigRequest",
)


async def message_fields(
    chan: grpc.aio.Channel, messages: Sequence[str], rpc_timeout: float
) -> dict[str, set[str]]:
    """Field names of each of `messages` (full names, all in the first's file), as the
    server's reflection describes them; a message it does not describe is left out."""
    stub = reflection_pb2_grpc.ServerReflectionStub(chan)
    ask = reflection_pb2.ServerReflectionRequest(file_containing_symbol=messages[0])
    found: dict[str, set[str]] = {}
    async for reply in stub.ServerReflectionInfo(iter([ask]), timeout=rpc_timeout):
        for raw in reply.file_descriptor_response.file_descriptor_proto:
            file = descriptor_pb2.FileDescriptorProto.FromString(raw)
            for message in file.message_type:
                name = f"{file.package}.{message.name}"
                if name in messages:
                    found[name] = {field.name for field in message.field}
    return found


async def require_validate_only(
    chan: grpc.aio.Channel, target: str, rpc_timeout: float, *, for_real: str
) -> None:
    """OpsError unless the server at `target` knows validate_only on every request that
    takes it (or cannot say: then a dry run there is not known to be one). `for_real` is
    the command's option to write on purpose instead."""
    try:
        fields = await message_fields(chan, DRY_RUN_REQUESTS, rpc_timeout)
    except grpc.aio.AioRpcError as exc:
        why = f"its reflection did not answer ({exc.code().name})"
    else:
        missing = [m for m in DRY_RUN_REQUESTS if "validate_only" not in fields.get(m, ())]
        if not missing:
            return
        why = "it is a release without it (" + ", ".join(missing) + ")"
    raise OpsError(
        f"{target} does not know validate_only: {why}; a dry run there would be applied"
        f" for real, so none is sent. Upgrade it, or write on purpose ({for_real})"
    )
