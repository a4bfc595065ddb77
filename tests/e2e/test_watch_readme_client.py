"""The README's reconnecting WatchPools client, run as written against a real server that
stops and comes back on the same port: it reconnects and numbers on without a gap."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import start_server
from testkit.paths import PROJECT_ROOT


class Enough(Exception):
    pass


def readme_client() -> Any:
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split("### Live pools", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace["watch_pools"]


async def test_the_readme_client_reconnects_and_resumes(
    settings: Settings, database_url: str
) -> None:
    watch_pools = readme_client()
    first = await start_server(settings, database_url, port=0)
    port = first.port
    seen: list[int] = []
    got = threading.Event()

    def show(message: Any) -> None:
        seen.append(message.sequence)
        got.set()
        if len(seen) >= 2:
            raise Enough

    def run() -> BaseException | None:
        try:
            watch_pools(f"127.0.0.1:{port}", show)
        except BaseException as exc:
            return exc
        return None

    client = asyncio.get_running_loop().run_in_executor(None, run)
    second = None
    try:
        assert await asyncio.to_thread(got.wait, 10)
        await first.stop(grace=2.0)  # the stream ends UNAVAILABLE: the client backs off
        second = await start_server(settings, database_url, port=port)
        ended = await asyncio.wait_for(client, 30)
        assert isinstance(ended, Enough)
        assert seen == [1, 2]  # the new stream numbered on from the last one seen
        assert second.watch_hub.counters.updates_sent == 1  # message 2 came from it
    finally:
        await first.stop(grace=1.0)
        if second is not None:
            await second.stop(grace=1.0)
