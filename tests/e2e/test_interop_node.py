"""A client generated from the proto by another language (Node.js) calls every RPC, and
reads WatchPools' stream around them."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import google.api
import pytest

from jackpot_grpc.entrypoints.server import RunningServer
from testkit.paths import PROJECT_ROOT
from testkit.tools import require_tool

CLIENT = Path(__file__).resolve().parent.parent / "interop" / "node"
# The googleapis-common-protos wheel ships google/api/*.proto and google/type/*.proto.
GOOGLEAPIS = Path(next(iter(google.api.__path__))).parent.parent


@pytest.fixture(scope="module")
def node_client() -> Path:
    require_tool("node", "needs Node.js")
    npm = require_tool("npm", "needs Node.js's npm")
    if not (CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=CLIENT,
            check=True,
            timeout=180,
            capture_output=True,
        )
    return CLIENT / "client.js"


async def run_client(script: Path, port: int, token: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        f"127.0.0.1:{port}",
        str(PROJECT_ROOT / "protos"),
        str(GOOGLEAPIS),
        token,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def test_node_client_calls_every_rpc(node_client: Path, server: RunningServer) -> None:
    # The shared server runs open (no clients): the client's admin token is not checked.
    r = await run_client(node_client, server.port, "open-mode")

    first, replay = r["contribute"], r["replay"]
    assert first["total_contribution"] == "10"  # int64 arrives as a string in JS
    assert [c["amount"] for c in first["contributions"]] == ["5", "3", "2"]
    assert (replay["contribution_id"], replay["replayed"]) == (first["contribution_id"], True)

    batch = r["contributeBatch"]
    assert (batch["applied_count"], batch["rejected_count"]) == (1, 1)
    assert batch["results"][1]["error"]["field"] == "game_id"

    assert r["win"]["actual_win_amount"] == "250"
    assert r["win"]["pool"]["group"] == "JACKPOT_GROUP_MAJOR"
    groups = [p["group"] for p in r["pools"]["pools"]]
    assert groups == ["JACKPOT_GROUP_MINOR", "JACKPOT_GROUP_MAJOR", "JACKPOT_GROUP_MEGA"]
    assert r["statistics"]["total_contribution_count"] == "2"
    assert len(r["config"]["pools"]) == 3
    assert r["updateConfig"]["config"]["contribution_rate"]["value"] == "0.0025000000"
    assert r["invalid"]["error"]["code"] == 3  # INVALID_ARGUMENT

    watched = r["watch"]  # grpc-js reading the server stream
    assert [m["sequence"] for m in watched] == [str(n) for n in range(1, len(watched) + 1)]
    assert len(watched[0]["pools"]) == 3
    hits = [m["hit"] for m in watched if m["hit"] is not None]
    assert [h["win_id"] for h in hits] == [r["win"]["win_id"]]  # the one win, once
    assert hits[0]["amount"] == "250"
