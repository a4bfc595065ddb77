"""Serving an aiohttp app on a TCP port: shared by the REST gateway and the health HTTP."""

from __future__ import annotations

from aiohttp import web


async def start_site(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float,
    reuse_port: bool = False,
    access_log: bool = True,
) -> tuple[web.AppRunner, int]:
    """Listen on host:port (0: any free port; "[::1]" or "::1"); the runner and bound port.

    The runner is cleaned up if the bind fails, so nothing is left half open.
    """
    runner = (
        web.AppRunner(app, shutdown_timeout=shutdown_timeout)
        if access_log
        else web.AppRunner(app, shutdown_timeout=shutdown_timeout, access_log=None)
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host.strip("[]"), port, reuse_port=reuse_port or None)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound: int = runner.addresses[0][1]
    return runner, bound
