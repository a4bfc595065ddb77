"""The smoke test of a running service: a contribution, a small win, clean books.

By default nothing moves: Contribute and Win are sent with validate_only (AIP-163), so the
service runs every check of a real call (auth, validation, idempotency, pool state, the
pool locks) and answers what it would do, writing nothing. Contribute (unique idempotency
key) → the same dry run again is not a replay (nothing was recorded) → Win a small amount
on minor for a random player → again, not a replay → ask the service to audit its own
books (`GET /health/jackpot?audit=now` on its health port), so the books checked are the
ones the service writes, whatever database this shell would reach.

With `write` (`jackpot smoke --write`) the money moves for real (game id `smoke-test`):
Contribute → its replay → GetPools shows the pools moved → Win → its replay → audit.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import grpc
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.contract.groups import group_from_proto, group_to_proto
from jackpot_grpc.domain.model import Group
from jackpot_grpc.ops.grpc_client import channel, describe_error
from jackpot_grpc.ops.health_check import health_url
from jackpot_grpc.ops.ops_error import OpsError
from jackpot_grpc.ops.output import progress
from jackpot_grpc.ops.server_features import require_validate_only

GAME_ID = "smoke-test"
AUDIT_PATH = "/health/jackpot"
# The service gives its audit up to 10 s and its pool read 3 s: wait for that at least.
AUDIT_HTTP_TIMEOUT = 15.0


class StepFailed(Exception):
    pass


# A closed service (clients configured) refuses a caller without a game-role token.
REFUSED_CALLER = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
TOKEN_HINT = (
    "smoke calls Contribute and Win (even with validate_only): set JACKPOT_TOKEN to the"
    " token of a client with the game role (jackpot clients add smoke --role game)"
)


def describe_refusal(error: grpc.aio.AioRpcError, token_set: bool) -> str:
    """The call's error, and for a refused caller what smoke needs."""
    detail = describe_error(error)
    if error.code() in REFUSED_CALLER:
        detail += f" -- {TOKEN_HINT}" + ("" if token_set else "; JACKPOT_TOKEN is not set")
    return detail


@dataclass
class Step:
    step: str
    ok: bool
    detail: str
    ms: float


@dataclass
class SmokeResult:
    target: str
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)


def _checked_shares(reply: pb.ContributeResponse) -> dict[str, int]:
    """A contribution's share per pool, which must be three that add up to its total."""
    shares = {_name(c.group): c.amount for c in reply.contributions}
    if (
        len(shares) != 3
        or sum(shares.values()) != reply.total_contribution
        or min(shares.values()) < 0
    ):
        raise StepFailed(f"shares {shares} do not add up to {reply.total_contribution}")
    return shares


def _name(group: int) -> str:
    found = group_from_proto(group)
    return found.value if found else str(group)


def _by_group(pools: pb.GetPoolsResponse) -> dict[str, pb.Pool]:
    return {_name(p.group): p for p in pools.pools}


def audit_url(health_base: str) -> str:
    """The service's audit-now URL under its health base URL (what `jackpot health` reads):
    `http://host:3001`, `http://host:3001/health` and `.../health/jackpot` all give
    `http://host:3001/health/jackpot?audit=now`."""
    parts = urlsplit(health_url(health_base, AUDIT_PATH))
    path = parts.path.rstrip("/")
    if path.endswith("/health"):
        path += "/jackpot"
    return urlunsplit(parts._replace(path=path, query="audit=now"))


async def audit_service_books(url: str, connect_seconds: float) -> str:
    """GET the service's /health/jackpot?audit=now: the books of the database it serves.

    Connecting gets `connect_seconds`; the answer, at least AUDIT_HTTP_TIMEOUT (the audit
    reads the whole ledger). Raises StepFailed with the ledger's problems when they do not
    balance, and when the service cannot be reached or did not audit."""
    limits = aiohttp.ClientTimeout(
        total=max(connect_seconds, AUDIT_HTTP_TIMEOUT), sock_connect=connect_seconds
    )
    try:
        async with (
            aiohttp.ClientSession(timeout=limits) as session,
            session.get(url, headers={"Accept": "application/json"}) as response,
        ):
            status, body = response.status, await response.text()
    except aiohttp.ClientConnectorError as exc:
        refused = isinstance(exc.os_error, ConnectionRefusedError)
        raise StepFailed(f"cannot reach {url}: {'connection refused' if refused else exc}") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        raise StepFailed(f"cannot reach {url}: {reason}") from exc
    try:
        report: Any = json.loads(body)
    except ValueError:
        report = None
    ledger = report.get("ledger") if isinstance(report, dict) else None
    if not isinstance(ledger, dict):
        raise StepFailed(f"HTTP {status} from {url} without a ledger report: {body.strip()[:200]}")
    if ledger.get("balanced") is False:
        problems = ledger.get("problems") or ["no problem listed"]
        raise StepFailed("BOOKS DO NOT BALANCE: " + ", ".join(map(str, problems)))
    if ledger.get("checked") is not True or ledger.get("balanced") is not True:
        why = ledger.get("error") or "the service has no ledger audit"
        raise StepFailed(f"the service did not audit its books ({url}): {why}")
    pools = ", ".join(
        f"{p.get('group')}={p.get('current_amount')}" for p in ledger.get("pools", [])
    )
    unhealthy = "" if status == 200 else f"; service {report.get('status')} (HTTP {status})"
    return f"books balance: {pools} (audited by {url}{unhealthy})"


async def run_smoke(
    settings: Settings,
    target: str,
    health_base: str | None,
    *,
    wager: int = 1000,
    win_amount: int = 1,
    rpc_timeout: float = 5.0,
    write: bool = False,
) -> SmokeResult:
    """Smoke-test `target`; with `write`, for real (money moves), else with validate_only."""
    result = SmokeResult(target)
    run = uuid.uuid4().hex[:12]

    async def step(name: str, action: Callable[[], Awaitable[str]]) -> bool:
        started = time.perf_counter()
        try:
            detail, ok = await action(), True
        except StepFailed as exc:
            detail, ok = str(exc), False
        except grpc.aio.AioRpcError as exc:
            detail, ok = describe_refusal(exc, bool(settings.auth.client_token)), False
        ms = round((time.perf_counter() - started) * 1000, 2)
        result.steps.append(Step(name, ok, detail, ms))
        progress(f"smoke: {name}: {'ok' if ok else 'FAILED'} ({detail})")
        return ok

    async with channel(settings, target, keyed_writes=True) as chan:  # every write is keyed
        stub = jackpot_pb2_grpc.JackpotServiceStub(chan)
        state: dict[str, object] = {}

        async def read_before() -> str:
            before = await stub.GetPools(pb.GetPoolsRequest(), timeout=rpc_timeout)
            if len(before.pools) != 3:
                raise StepFailed(f"expected 3 pools, got {len(before.pools)}")
            state["before"] = _by_group(before)
            return ", ".join(f"{_name(p.group)}={p.current_amount}" for p in before.pools)

        async def contribute() -> str:
            request = pb.ContributeRequest(
                game_id=GAME_ID, wager_amount=wager, idempotency_key=f"smoke-contribute-{run}"
            )
            reply = await stub.Contribute(request, timeout=rpc_timeout)
            if reply.replayed:
                raise StepFailed("a fresh idempotency key was answered as a replay")
            shares = _checked_shares(reply)
            state["request"], state["reply"], state["shares"] = request, reply, shares
            return f"id {reply.contribution_id}, total {reply.total_contribution} {shares}"

        async def replay_contribution() -> str:
            request = state["request"]
            first = state["reply"]
            assert isinstance(request, pb.ContributeRequest)
            assert isinstance(first, pb.ContributeResponse)
            again = await stub.Contribute(request, timeout=rpc_timeout)
            if not again.replayed or again.contribution_id != first.contribution_id:
                raise StepFailed("the repeated idempotency key was applied a second time")
            return f"replayed id {again.contribution_id}, nothing changed"

        async def pools_moved() -> str:
            before = state["before"]
            shares = state["shares"]
            assert isinstance(before, dict) and isinstance(shares, dict)
            # Totals only grow; other traffic may add more. Another server process may serve
            # GetPools from a snapshot up to JACKPOT_SNAPSHOT_TTL old: retry briefly.
            deadline = time.monotonic() + 3.0
            while True:
                after = _by_group(await stub.GetPools(pb.GetPoolsRequest(), timeout=rpc_timeout))
                missing = {
                    g: (after[g].total_contributions - before[g].total_contributions, share)
                    for g, share in shares.items()
                    if after[g].total_contributions - before[g].total_contributions < share
                }
                if not missing:
                    return "every pool took its share: " + ", ".join(
                        f"{g} +{after[g].total_contributions - before[g].total_contributions}"
                        for g in shares
                    )
                if time.monotonic() > deadline:
                    raise StepFailed(
                        f"pools did not move by their shares (moved, share): {missing}"
                    )
                await asyncio.sleep(0.2)

        async def win() -> str:
            request = pb.WinRequest(
                group=group_to_proto(Group.MINOR),
                game_id=GAME_ID,
                user_id=str(uuid.uuid4()),
                win_amount=win_amount,
                idempotency_key=f"smoke-win-{run}",
            )
            reply = await stub.Win(request, timeout=rpc_timeout)
            if reply.actual_win_amount != win_amount:
                raise StepFailed(f"paid {reply.actual_win_amount}, asked for {win_amount}")
            if reply.remaining_amount < reply.pool.seed_amount:
                raise StepFailed(
                    f"minor pool left at {reply.remaining_amount}, below its seed"
                    f" {reply.pool.seed_amount}"
                )
            state["win_request"], state["win_reply"] = request, reply
            return (
                f"win {reply.win_id}: paid {reply.actual_win_amount}, minor now"
                f" {reply.remaining_amount} (seed top-up {reply.seed_top_up})"
            )

        async def replay_win() -> str:
            request = state["win_request"]
            first = state["win_reply"]
            assert isinstance(request, pb.WinRequest) and isinstance(first, pb.WinResponse)
            again = await stub.Win(request, timeout=rpc_timeout)
            if not again.replayed or again.win_id != first.win_id:
                raise StepFailed("the repeated win was paid a second time")
            return f"replayed win {again.win_id}, nothing paid"

        async def knows_validate_only() -> str:
            try:
                await require_validate_only(chan, target, rpc_timeout, for_real="--write")
            except OpsError as exc:
                raise StepFailed(str(exc)) from exc
            return "its Contribute and Win requests have validate_only"

        async def dry_contribute() -> str:
            request = pb.ContributeRequest(
                game_id=GAME_ID,
                wager_amount=wager,
                idempotency_key=f"smoke-contribute-{run}",
                validate_only=True,
            )
            reply = await stub.Contribute(request, timeout=rpc_timeout)
            if reply.replayed or reply.contribution_id:
                raise StepFailed("a dry run with a fresh key was answered as recorded")
            shares = _checked_shares(reply)
            state["request"] = request
            after = ", ".join(f"{_name(p.group)}={p.amount}" for p in reply.pool_amounts)
            return f"would contribute {reply.total_contribution} {shares}; pools after: {after}"

        async def nothing_contributed() -> str:
            request = state["request"]
            assert isinstance(request, pb.ContributeRequest)
            again = await stub.Contribute(request, timeout=rpc_timeout)
            if again.replayed:
                raise StepFailed("the dry run's idempotency key was recorded: it wrote")
            return "the key was not recorded: nothing written"

        async def dry_win() -> str:
            request = pb.WinRequest(
                group=group_to_proto(Group.MINOR),
                game_id=GAME_ID,
                user_id=str(uuid.uuid4()),
                win_amount=win_amount,
                idempotency_key=f"smoke-win-{run}",
                validate_only=True,
            )
            reply = await stub.Win(request, timeout=rpc_timeout)
            if reply.replayed or reply.win_id:
                raise StepFailed("a dry run with a fresh key was answered as recorded")
            if reply.actual_win_amount != win_amount:
                raise StepFailed(f"would pay {reply.actual_win_amount}, asked for {win_amount}")
            state["win_request"] = request
            return (
                f"would pay {reply.actual_win_amount}, minor then {reply.remaining_amount}"
                f" (seed top-up {reply.seed_top_up})"
            )

        async def nothing_paid() -> str:
            request = state["win_request"]
            assert isinstance(request, pb.WinRequest)
            again = await stub.Win(request, timeout=rpc_timeout)
            if again.replayed:
                raise StepFailed("the dry run's win key was recorded: it paid")
            return "the key was not recorded: nothing paid"

        steps = (
            (
                ("read pools", read_before),
                ("contribute", contribute),
                ("replay contribution", replay_contribution),
                ("pools moved", pools_moved),
                ("win minor", win),
                ("replay win", replay_win),
            )
            if write
            else (
                ("read pools", read_before),
                ("server knows validate_only", knows_validate_only),
                ("contribute (validate only)", dry_contribute),
                ("nothing contributed", nothing_contributed),
                ("win minor (validate only)", dry_win),
                ("nothing paid", nothing_paid),
            )
        )
        for name, action in steps:
            if not await step(name, action):
                break

    if health_base is not None:  # the service audits its own books; None: no audit step
        url = audit_url(health_base)
        await step("audit books", lambda: audit_service_books(url, rpc_timeout))
    return result
