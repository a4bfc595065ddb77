"""`jackpot serve` (re)started while its database is down stays up, says so on every health
surface, refuses calls with UNAVAILABLE, and serves as soon as the database answers: a
restart during an outage (the runbook's "restart the service") must not become a crash
loop."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from testkit.grpc_health import NOT_SERVING, SERVING, health_status
from testkit.outage import database_name, set_connections_allowed
from testkit.processes import serve_process

START_BOUND = 30.0  # s: a cold start of the process on a busy machine, many times over


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_a_server_started_without_its_database_waits_for_it(
    admin_url: str, database_url: str, tmp_path: Path
) -> None:
    name = database_name(database_url)
    set_connections_allowed(admin_url, name, False)
    process = serve_process(database_url, tmp_path)
    try:
        process.launch()
        target = process.target
        process.wait_until(
            lambda: health_status(target, timeout=0.5, service="liveness") == SERVING,
            START_BOUND,
            "live",
        )
        health = f"http://127.0.0.1:{process.health_port}/health"
        process.wait_until(lambda: http_status(health) == 503, 10.0, "answering 503")
        assert health_status(target, service="") == NOT_SERVING
        assert health_status(target) == NOT_SERVING  # jackpot.v1.JackpotService

        with grpc.insecure_channel(target) as channel:
            stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetPools(pb.GetPoolsRequest(), timeout=10.0)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

            # It stays up through several retries (the old start gave up after 10 s).
            time.sleep(3.0)
            assert process.alive(), process.log()
            assert health_status(target, service="liveness") == SERVING

            set_connections_allowed(admin_url, name, True)
            process.wait_serving(timeout=15.0)
            assert http_status(health) == 200
            reply = stub.Contribute(
                pb.ContributeRequest(game_id="after-outage", wager_amount=1000), timeout=10.0
            )
            assert reply.contribution_id > 0
        assert process.starts == 1  # the same process throughout
    finally:
        set_connections_allowed(admin_url, name, True)
        process.stop()
