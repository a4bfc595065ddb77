"""Pacing, sharing of on-demand work, the probe's failure threshold, gRPC options."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.database_health_probe import (
    LIVENESS,
    MAX_BACKOFF,
    DatabaseHealthProbe,
)
from jackpot_grpc.entrypoints.grpc_options import server_options
from jackpot_grpc.entrypoints.pacer import Pacer
from jackpot_grpc.jobs.on_demand import OnDemand


def test_the_pacer_lets_a_burst_through_then_spaces_requests_and_refuses_past_max_wait() -> None:
    now = [100.0]
    pacer = Pacer(rate=10.0, burst=3, max_wait=0.25, clock=lambda: now[0])
    assert [pacer.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    waits = [pacer.reserve() for _ in range(3)]
    assert waits[0] is not None and abs(waits[0] - 0.1) < 1e-9
    assert waits[1] is not None and abs(waits[1] - 0.2) < 1e-9
    assert waits[2] is None  # 0.3 s > max_wait: refused, nothing reserved
    now[0] += 10
    assert pacer.reserve() == 0.0


async def test_on_demand_work_is_shared_and_run_at_most_once_per_interval() -> None:
    runs = 0

    async def audit() -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)
        return runs

    on_demand = OnDemand(audit, interval=60.0)
    outcomes = await asyncio.gather(*(on_demand.get() for _ in range(50)))
    assert runs == 1
    assert sorted(o.how for o in outcomes) == ["ran"] + ["shared"] * 49
    later = await on_demand.get()
    assert (later.how, later.value, runs) == ("recent", 1, 1)


async def test_a_failed_run_is_not_retried_within_the_interval() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("statement timeout")

    on_demand = OnDemand(broken, interval=60.0)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            await on_demand.get()
    assert calls == 1


async def test_readiness_flips_only_after_consecutive_failures_and_liveness_never() -> None:
    health = health_aio.HealthServicer()
    answers = iter([True, False, False, True, False, False, False])

    async def ping() -> None:
        if not next(answers):
            raise TimeoutError

    probe = DatabaseHealthProbe(health, ping, interval=1.0, failures_to_flip=3)
    await probe.set_live()
    seen = [await probe.check() for _ in range(7)]
    assert seen == [True, True, True, True, True, True, False]

    async def status(name: str) -> int:
        request = health_pb2.HealthCheckRequest(service=name)
        return int((await health.Check(request, None)).status)

    assert await status("") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await status(LIVENESS) == health_pb2.HealthCheckResponse.SERVING


def test_grpc_server_options_come_from_settings() -> None:
    defaults = Settings.from_env({})
    settings = dataclasses.replace(
        defaults,
        grpc=dataclasses.replace(
            defaults.grpc, max_connection_age=60.0, max_streams_per_connection=7
        ),
    )
    options = dict(server_options(settings, reuse_port=False))
    assert options["grpc.max_connection_age_ms"] == 60_000
    assert options["grpc.max_connection_age_grace_ms"] == 10_000  # the shutdown grace
    assert options["grpc.max_concurrent_streams"] == 7
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.keepalive_time_ms"] == 60_000


async def test_the_probe_backs_off_while_the_database_is_down_and_not_while_serving() -> None:
    health = health_aio.HealthServicer()
    up = [True, True, False, False, False, False, False, False, True]
    answers = iter(up)

    async def ping() -> None:
        if not next(answers):
            raise ConnectionRefusedError

    probe = DatabaseHealthProbe(health, ping, interval=0.5, failures_to_flip=2)
    delays = []
    for _ in up:
        await probe.check()
        delays.append(probe.next_delay())
    # Serving (and the first failure, still tolerated): the interval. Down: doubled per
    # failure up to MAX_BACKOFF. Back: the interval again.
    assert delays == [0.5, 0.5, 0.5, 1.0, 2.0, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF, 0.5]


class _SlowHealth:
    """The real servicer behind a `set` that waits for a go: lets a write commit exactly
    while the probe publishes a flip. (It wraps rather than subclasses: grpc_health has no
    types, so its servicer is Any to mypy.)"""

    def __init__(self) -> None:
        self.servicer = health_aio.HealthServicer()
        self.go = asyncio.Event()
        self.go.set()

    async def set(self, service: str, status: int) -> None:
        await self.go.wait()
        await self.servicer.set(service, status)


async def test_a_write_committed_while_the_probe_flips_readiness_is_not_lost() -> None:
    health = _SlowHealth()
    answers = iter([True, False])

    async def ping() -> None:
        if not next(answers):
            raise TimeoutError

    probe = DatabaseHealthProbe(health, ping, interval=60.0, failures_to_flip=1)
    assert await probe.check()
    health.go.clear()
    flipping = asyncio.ensure_future(probe.check())  # fails: publishes NOT_SERVING
    for _ in range(5):
        await asyncio.sleep(0)
    probe.write_succeeded()  # a call's commit lands meanwhile
    health.go.set()
    await flipping
    for _ in range(20):
        await asyncio.sleep(0)

    async def status(name: str) -> int:
        request = health_pb2.HealthCheckRequest(service=name)
        return int((await health.servicer.Check(request, None)).status)

    # Before: `healthy` was set after the await, so the write was ignored (the probe still
    # looked healthy to it) and readiness stayed NOT_SERVING until the next probe.
    assert probe.healthy is True
    assert await status("") == health_pb2.HealthCheckResponse.SERVING
