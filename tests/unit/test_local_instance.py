"""Which gRPC targets name this host's own instance (smoke then finds its health port in
the same environment): every loopback spelling at GRPC_PORT, nothing else."""

from __future__ import annotations

import pytest

from jackpot_grpc.ops.instance import is_local_instance


@pytest.mark.parametrize(
    "target",
    ["localhost:50051", "LOCALHOST:50051", "127.0.0.1:50051", "127.0.0.2:50051", "[::1]:50051"],
)
def test_loopback_at_grpc_port_is_the_local_instance(target: str) -> None:
    assert is_local_instance(target, 50051)


@pytest.mark.parametrize(
    "target",
    [
        "localhost:50052",  # another instance on this host (blue-green's green)
        "10.0.0.1:50051",
        "green:50051",
        "dns:///localhost:50051",
        "127.0.0.1:50051,127.0.0.1:50052",
        "localhost",
        "[::1",
        "localhost:port",
        "",
    ],
)
def test_anything_else_is_not(target: str) -> None:
    assert not is_local_instance(target, 50051)
