"""A real REST gateway in front of a gRPC target, on a free port of 127.0.0.1, for as long
as a block runs: the one way the tests start one in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from jackpot_grpc.gateway.app import create_gateway_app, start_gateway

# Port 9 (discard) answers nothing: /metrics through the gateway fails unless a test says
# where the server's health port is.
NO_METRICS = "http://127.0.0.1:9/metrics"


@asynccontextmanager
async def gateway_to(
    target: str, *, max_body_bytes: int = 4096, metrics_url: str = NO_METRICS, **options: Any
) -> AsyncIterator[str]:
    """Yields the gateway's base URL; `options` go to create_gateway_app as they are."""
    app = create_gateway_app(
        target,
        max_body_bytes=max_body_bytes,
        metrics_url=metrics_url,
        call_timeout=5.0,
        **options,
    )
    running = await start_gateway(app, "127.0.0.1", 0, shutdown_timeout=1.0)
    try:
        yield f"http://127.0.0.1:{running.port}"
    finally:
        await running.stop()
