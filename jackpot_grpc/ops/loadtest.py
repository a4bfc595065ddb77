"""A load generator on grpc.aio (and aiohttp for the REST gateway): `jackpot loadtest`
against a running service, and the benchmarks (bench/). (One generator; its length is the
open and closed loops and their bookkeeping.)

Closed loop (no `rate`): `concurrency` workers each keep one call in flight: send, await
the answer, send the next. Open loop (`rate` calls/s): calls start on a fixed schedule
whatever the answers, at most `concurrency` in flight (a call the schedule cannot start
counts as CLIENT_SATURATED); latency runs from the scheduled start, so a slow service
shows in the percentiles instead of slowing the load (no coordinated omission).
Calls that start during the warm-up are made but not measured. Latency is client-observed
(it includes the client's own event-loop delay).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

Kind = Literal["health", "contribute", "contribute_batch", "get_pools", "rest_contribute"]
# The kinds that write (unless sent with validate_only).
WRITE_KINDS = frozenset({"contribute", "contribute_batch", "rest_contribute"})

# Call = one request; it returns how many items it applied (1 for a single call).
Call = Callable[[], Awaitable[int]]


class CallFailed(Exception):
    """A call that completed with an error; `code` is the gRPC status name or HTTP_<n>."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class LoadSpec:
    kind: Kind
    # gRPC: "host:port". REST: the gateway's base URL, "http://127.0.0.1:3000".
    target: str
    concurrency: int = 64
    duration: float = 5.0
    warmup: float = 1.0
    channels: int = 1
    batch_items: int = 1000
    wager_amount: int = 1000
    game_id: str = "bench"
    idempotency_keys: bool = False
    # Stop issuing after this many calls (duration then only caps the run).
    max_calls: int | None = None
    call_timeout: float = 30.0
    token: str | None = None  # a game client's bearer token (the server has clients)
    # Calls per second on a fixed schedule (open loop); None: closed loop.
    rate: float | None = None
    # Writes sent with validate_only (AIP-163): every check runs, nothing is written.
    validate_only: bool = False


@dataclass
class LoadResult:
    kind: Kind
    concurrency: int
    # The measured window: from the end of the warm-up to its end (or the last completion).
    window_s: float
    calls: int  # successful measured calls
    items: int  # items applied by the successful measured calls
    errors: dict[str, int]  # measured failures by status code
    latencies_ms: list[float] = field(repr=False)  # every measured call, success or not
    total_ok_calls: int = 0  # successful calls including the warm-up
    total_ok_items: int = 0  # items applied including the warm-up
    client_cpu_s: float = 0.0  # CPU time the load generator's process used
    wall_s: float = 0.0  # wall time of the whole run, warm-up included

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.window_s if self.window_s > 0 else 0.0

    @property
    def items_per_s(self) -> float:
        return self.items / self.window_s if self.window_s > 0 else 0.0

    @property
    def client_cpu_pct(self) -> float:
        return 100.0 * self.client_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """The JSON-ready figures (no raw samples)."""
        return {
            "kind": self.kind,
            "concurrency": self.concurrency,
            "window_s": round(self.window_s, 3),
            "calls": self.calls,
            "items": self.items,
            "calls_per_s": round(self.calls_per_s, 1),
            "items_per_s": round(self.items_per_s, 1),
            "errors": dict(self.errors),
            "error_count": self.error_count,
            "latency_ms": latency_summary(self.latencies_ms),
            "total_ok_calls": self.total_ok_calls,
            "total_ok_items": self.total_ok_items,
            "client_cpu_pct": round(self.client_cpu_pct, 1),
        }


def percentile(samples: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest sample with at least q% of samples ≤ it.

    None for no samples. q=0 gives the minimum, q=100 the maximum.
    """
    if not samples:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    ordered = sorted(samples)
    # round() keeps float noise (99.9 * 1000 / 100 = 999.0000000000001) from adding a rank.
    rank = max(1, math.ceil(round(q * len(ordered) / 100, 9)))
    return ordered[rank - 1]


def latency_summary(samples: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(samples)

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "p50": rounded(percentile(ordered, 50)),
        "p90": rounded(percentile(ordered, 90)),
        "p95": rounded(percentile(ordered, 95)),
        "p99": rounded(percentile(ordered, 99)),
        "max": rounded(ordered[-1] if ordered else None),
        "mean": rounded(sum(ordered) / len(ordered) if ordered else None),
    }


# --- calls -----------------------------------------------------------------------------


def _keys() -> Callable[[], str]:
    prefix = uuid.uuid4().hex[:12]
    counter = itertools.count()
    return lambda: f"load-{prefix}-{next(counter)}"


def _grpc_calls(spec: LoadSpec, channel: grpc.aio.Channel) -> Call:
    """One call factory per channel; requests are built once unless they carry keys."""
    timeout = spec.call_timeout
    if spec.kind == "health":
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")

        async def check() -> int:
            await health.Check(request, timeout=timeout)
            return 1

        return check

    stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
    next_key = _keys() if spec.idempotency_keys else None
    auth = (("authorization", f"Bearer {spec.token}"),) if spec.token else None

    def item() -> pb.ContributeRequest:
        return pb.ContributeRequest(
            game_id=spec.game_id,
            wager_amount=spec.wager_amount,
            idempotency_key=next_key() if next_key else "",
            validate_only=spec.validate_only,
        )

    if spec.kind == "contribute":
        fixed = item()

        async def contribute() -> int:
            await stub.Contribute(item() if next_key else fixed, timeout=timeout, metadata=auth)
            return 1

        return contribute

    if spec.kind == "contribute_batch":

        def batch() -> pb.ContributeBatchRequest:
            return pb.ContributeBatchRequest(
                contributions=[item() for _ in range(spec.batch_items)],
                validate_only=spec.validate_only,
            )

        fixed_batch = batch()

        async def contribute_batch() -> int:
            request = batch() if next_key else fixed_batch
            reply = await stub.ContributeBatch(request, timeout=timeout, metadata=auth)
            if reply.rejected_count:
                raise CallFailed("ITEMS_REJECTED")
            return int(reply.applied_count)

        return contribute_batch

    if spec.kind == "get_pools":
        pools_request = pb.GetPoolsRequest()

        async def get_pools() -> int:
            await stub.GetPools(pools_request, timeout=timeout, metadata=auth)
            return 1

        return get_pools

    raise ValueError(f"not a gRPC load: {spec.kind}")


def _rest_call(spec: LoadSpec, session: aiohttp.ClientSession) -> Call:
    if spec.kind != "rest_contribute":
        raise ValueError(f"not a REST load: {spec.kind}")
    url = spec.target.rstrip("/") + "/api/jackpot/contribute"
    headers = {"content-type": "application/json"}
    if spec.token:
        headers["authorization"] = f"Bearer {spec.token}"
    next_key = _keys() if spec.idempotency_keys else None
    fields: dict[str, Any] = {"gameId": spec.game_id, "wagerAmount": spec.wager_amount}
    if spec.validate_only:
        fields["validateOnly"] = True
    fixed = json.dumps(fields).encode()
    timeout = aiohttp.ClientTimeout(total=spec.call_timeout)

    async def contribute() -> int:
        body = fixed
        if next_key:
            body = json.dumps({**fields, "idempotencyKey": next_key()}).encode()
        async with session.post(url, data=body, headers=headers, timeout=timeout) as response:
            await response.read()
            if response.status != 200:
                raise CallFailed(f"HTTP_{response.status}")
        return 1

    return contribute


# --- the closed loop ---------------------------------------------------------------------


@dataclass
class _State:
    measure_from: float
    stop_at: float
    max_calls: int | None
    issued: int = 0
    calls: int = 0
    items: int = 0
    total_ok_calls: int = 0
    total_ok_items: int = 0
    last_done: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


async def _attempt(call: Call) -> tuple[str | None, int]:
    """(error code or None, items applied) of one call."""
    try:
        return None, await call()
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, 0
    except CallFailed as exc:
        return exc.code, 0
    except (TimeoutError, aiohttp.ClientError) as exc:
        return type(exc).__name__, 0


def _record(state: _State, started: float, code: str | None, items: int) -> None:
    done = time.perf_counter()
    if code is None:
        state.total_ok_calls += 1
        state.total_ok_items += items
    # Measured: the calls that complete inside the window (throughput = completions in
    # the window / its length, unbiased even when one call lasts a good part of it).
    if not state.measure_from <= done <= state.stop_at:
        return
    state.latencies.append((done - started) * 1000.0)
    state.last_done = max(state.last_done, done)
    if code is None:
        state.calls += 1
        state.items += items
    else:
        state.errors[code] += 1


async def _worker(call: Call, state: _State) -> None:
    perf = time.perf_counter
    while True:
        started = perf()
        if started >= state.stop_at:
            return
        if state.max_calls is not None:
            if state.issued >= state.max_calls:
                return
            state.issued += 1
        code, items = await _attempt(call)
        _record(state, started, code, items)


async def _open_loop(
    calls: Sequence[Call], state: _State, begin: float, rate: float, in_flight: int
) -> None:
    """Start calls every 1/rate s from `begin`, whatever the answers; at most `in_flight`."""
    running: set[asyncio.Task[None]] = set()

    async def one(call: Call, scheduled: float) -> None:
        code, items = await _attempt(call)
        _record(state, scheduled, code, items)

    for n in itertools.count():
        scheduled = begin + n / rate
        if scheduled >= state.stop_at:
            break
        if state.max_calls is not None:
            if state.issued >= state.max_calls:
                break
            state.issued += 1
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(running) >= in_flight:  # the client cannot keep the schedule
            if scheduled >= state.measure_from:
                state.errors["CLIENT_SATURATED"] += 1
            continue
        task = asyncio.create_task(one(calls[n % len(calls)], scheduled))
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)


async def _drive(spec: LoadSpec, calls: Sequence[Call]) -> LoadResult:
    cpu_before = time.process_time()
    begin = time.perf_counter()
    measure_from = begin + spec.warmup
    state = _State(measure_from, measure_from + spec.duration, spec.max_calls)
    if spec.rate is not None:
        await _open_loop(calls, state, begin, spec.rate, spec.concurrency)
    else:
        await asyncio.gather(
            *(_worker(calls[i % len(calls)], state) for i in range(spec.concurrency))
        )
    end = time.perf_counter()
    # Normally the window is the whole measured duration (workers run past its end); with
    # max_calls it may end early, at the last completion.
    window_end = min(state.stop_at, end if state.max_calls is None else state.last_done)
    return LoadResult(
        kind=spec.kind,
        concurrency=spec.concurrency,
        window_s=max(0.0, window_end - measure_from),
        calls=state.calls,
        items=state.items,
        errors=dict(state.errors),
        latencies_ms=state.latencies,
        total_ok_calls=state.total_ok_calls,
        total_ok_items=state.total_ok_items,
        client_cpu_s=time.process_time() - cpu_before,
        wall_s=end - begin,
    )


async def run_load(spec: LoadSpec, on_ready: Callable[[], None] | None = None) -> LoadResult:
    """Run one load in this process's running event loop.

    `on_ready` is called once connected, right before the first call is sent.
    """
    if spec.concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if spec.rate is not None and spec.rate <= 0:
        raise ValueError("rate must be greater than 0")
    if spec.kind == "rest_contribute":
        connector = aiohttp.TCPConnector(limit=spec.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            if on_ready is not None:
                on_ready()
            return await _drive(spec, [_rest_call(spec, session)])
    # Without a local subchannel pool, channels to one target share one connection.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(spec.target, options=options)
        for _ in range(max(1, spec.channels))
    ]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=10)
        if on_ready is not None:
            on_ready()
        return await _drive(spec, [_grpc_calls(spec, c) for c in channels])
    finally:
        for channel in channels:
            await channel.close()
