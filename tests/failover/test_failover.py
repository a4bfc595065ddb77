"""Database failover under keyed load, on a real Patroni cluster (tests/failover/conftest.py).

One `jackpot serve` for the whole module, pointed at the three nodes with
`target_session_attrs=read-write`; never restarted. Closed-loop callers send keyed
Contribute calls and retry each key until acknowledged (testkit/keyed_load.py) while:

- A: the leader's node is killed (`kill -9` of Patroni and of the postmaster with its
  backends, as if the machine died); Patroni promotes the synchronous standby once the
  leader key expires; the killed node is started again and rejoins as a replica;
- B: `patronictl switchover` hands the leadership to the synchronous standby gracefully;
- C: writes freeze on purpose: every standby's walreceiver is stopped (SIGSTOP), so the
  leader's commits wait for a synchronous standby that receives no WAL; readiness must
  turn NOT_SERVING within 10 s and calls fail UNAVAILABLE within 15 s instead of hanging.

After each: every acknowledged key, re-sent, replays its first answer; the ledger holds
each key once with the amounts its caller was told; `jackpot audit` balances; the only
errors callers saw were UNAVAILABLE or DEADLINE_EXCEEDED. Figures go to the results file
(conftest.results_path) and docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

import psutil
import pytest

from testkit.calls import Call, status_codes
from testkit.figures import latency_ms, report
from testkit.grpc_health import NOT_SERVING, SERVING, health_status
from testkit.keyed_load import RETRYABLE, KeyedLoad, replay_problems, resend
from testkit.ledger import check_books, check_contributions, cli_audit
from testkit.patroni_cluster import PatroniCluster
from testkit.processes import ServiceProcess

CALLERS = 12
WARMUP_ACKS = 300  # acknowledged before the fault
AFTER_S = 3.0  # load kept on after the first success following the fault
RECOVERY_LIMIT_S = 30.0  # the leader key's TTL (8 s) plus an election, with margin
LOAD_LIMIT_S = 90.0
NOT_SERVING_WITHIN = 10.0
FAIL_WITHIN = 15.0
FREEZE_S = 16.0  # longer than FAIL_WITHIN: a call that hangs would be seen hanging


@pytest.fixture(scope="module")
def ledger_calls() -> list[Call]:
    """Every call of every scenario so far: they share one ledger."""
    return []


def failover_report(service: ServiceProcess) -> dict[str, Any]:
    """/health's `failover` check: the database's identity, timeline changes seen, and the
    newest checkpoint compared with the database after the last change."""
    url = f"http://127.0.0.1:{service.health_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503: unhealthy, the body says why
        body = json.loads(exc.read())
    report: dict[str, Any] = body["checks"]["failover"]
    return report


def wait_failover_seen(service: ServiceProcess, changes_before: int) -> dict[str, Any]:
    """The service's failover check once it has seen a new timeline and compared the
    newest checkpoint with the new leader after that change (bounded): a comparison from
    an earlier change (or from the start) does not count."""
    deadline = time.monotonic() + 15
    while True:
        seen = failover_report(service)
        compared = seen["checkpoint_comparison"] or {}
        change = seen["last_change"] or {}
        if (
            seen["timeline_changes"] > changes_before
            and compared
            and change
            and datetime.fromisoformat(compared["checked_at"])
            > datetime.fromisoformat(change["at"])
        ):
            return seen
        assert time.monotonic() < deadline, f"failover not seen by the service: {seen}"
        time.sleep(0.2)


def leader_timeline(cluster: PatroniCluster, leader: Any) -> int:
    member = next(m for m in cluster.members() if m["name"] == leader.name)
    return int(member["timeline"])


def settled(cluster: PatroniCluster, timeout: float = 60.0) -> None:
    """Every node running, a leader and a synchronous standby (bounded)."""
    cluster.wait_until(
        lambda: (
            cluster.members_running() == len(cluster.nodes)
            and cluster.leader() is not None
            and cluster.sync_standby() is not None
        ),
        time.monotonic() + timeout,
        "settled (every node running, a synchronous standby)",
    )


async def check_after(
    load: KeyedLoad, service: ServiceProcess, dsn: str, fault_at: float, earlier: list[Call]
) -> dict[str, Any]:
    """The checks every scenario ends with; returns their figures. `earlier`: the calls
    of the scenarios before (the same ledger), to which this one's are added."""
    codes = status_codes(c.code for c in load.calls)
    assert set(codes) <= {"OK", *RETRYABLE}, codes
    assert load.gave_up == [], f"keys never acknowledged: {load.gave_up[:10]}"

    first = load.first_answers()
    again = await resend(service.target, first.values())
    assert replay_problems(first, again) == []

    earlier += [*load.calls, *again]
    checked = check_contributions(dsn, earlier, faults=True)
    assert checked.problems == [], checked.problems[:20]
    assert check_books(dsn) == []
    exit_code, audit = cli_audit(dsn)
    assert exit_code == 0 and audit["balanced"], audit

    # The same process served throughout, and serves now.
    assert service.alive() and service.starts == 1, service.log()
    assert health_status(service.target) == SERVING

    failed = [c for c in load.calls if not c.ok]
    return {
        "callers": load.callers,
        "calls": len(load.calls),
        "codes": codes,
        "acknowledged_keys": len(first),
        "acknowledged_before_fault": sum(1 for c in first.values() if c.ended < fault_at),
        "resent_replayed": len(again),
        "lost": 0,
        "applied_twice": 0,
        "failed_latency_ms": latency_ms([c.latency for c in failed]),
        "ledger": checked.figures(),
        "audit_balanced": audit["balanced"],
        "service_starts": service.starts,
    }


def health_changes(load: KeyedLoad, since: float) -> list[tuple[float, str]]:
    """grpc health transitions after `since`: (seconds after it, status)."""
    names = {SERVING: "SERVING", NOT_SERVING: "NOT_SERVING", None: "no answer"}
    changes: list[tuple[float, str]] = []
    last: str | None = None
    for moment, status in load.health:
        name = names.get(status, str(status))
        if moment >= since and name != last:
            changes.append((round(moment - since, 2), name))
        last = name
    return changes


def signed_size(service: ServiceProcess) -> int:
    """The tree size of the service's newest signed checkpoint (the health port's
    /ledger/checkpoint, a C2SP note: origin, size, root); 0 when none is signed yet."""
    url = f"http://127.0.0.1:{service.health_port}/ledger/checkpoint"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return int(response.read().decode().splitlines()[1])
    except urllib.error.HTTPError as exc:
        assert exc.code == 404, exc  # no checkpoint yet
        return 0


async def signed_past(service: ServiceProcess, size: int, within: float = 15.0) -> None:
    """Until a checkpoint over more than `size` leaves is signed (bounded)."""
    deadline = time.monotonic() + within
    while await asyncio.to_thread(signed_size, service) <= size:
        assert time.monotonic() < deadline, f"no checkpoint past {size} leaves in {within} s"
        await asyncio.sleep(0.1)


async def run_fault(
    load: KeyedLoad, fault: Any, service: ServiceProcess, *, wait_recovery: bool = True
) -> dict[str, Any]:
    """Start `load`, inject `fault` (a blocking function, run in a thread) once WARMUP_ACKS
    keys are acknowledged and a checkpoint signed since covers some of them (so a failover
    has a checkpoint to be compared with: at the suite's start the load can reach
    WARMUP_ACKS before the signer's first turn), wait for the first success started after
    it, keep the load on AFTER_S, stop. Returns the moments."""
    signed_before = await asyncio.to_thread(signed_size, service)
    task = asyncio.create_task(load.run(LOAD_LIMIT_S))
    marks: dict[str, Any] = {}
    try:
        async with asyncio.timeout(30):
            await load.wait_acknowledged(WARMUP_ACKS)
        await signed_past(service, signed_before)
        marks["fault_started"] = time.monotonic()
        await asyncio.to_thread(fault)
        marks["fault_done"] = time.monotonic()
        if wait_recovery:
            async with asyncio.timeout(RECOVERY_LIMIT_S):
                first_ok = await load.wait_first_ok_after(marks["fault_done"])
            marks["first_ok"] = first_ok.ended
            await asyncio.sleep(AFTER_S)
    finally:
        load.stop()
        await asyncio.wait_for(task, timeout=LOAD_LIMIT_S)
    marks["load_stopped"] = time.monotonic()
    return marks


async def test_leader_killed(
    cluster: PatroniCluster,
    service: ServiceProcess,
    database_dsn: str,
    failover_results: dict[str, Any],
    ledger_calls: list[Call],
) -> None:
    """A: kill -9 of the leader's node under load."""
    settled(cluster)
    old_leader = cluster.leader()
    assert old_leader is not None
    load = KeyedLoad(service.target, "kill", CALLERS)
    changes_before = failover_report(service)["timeline_changes"]

    marks = await run_fault(load, lambda: cluster.kill_node(old_leader), service)

    new_leader = cluster.wait_leader(not_=old_leader)
    # The service saw the new timeline, and the new leader has every leaf of the newest
    # signed checkpoint: synchronous replication lost nothing.
    seen = wait_failover_seen(service, changes_before)
    assert seen["timeline"] == leader_timeline(cluster, new_leader), seen
    assert seen["checkpoint_comparison"]["leaves_missing"] == 0, seen
    assert seen["checkpoint_comparison"]["root_matches"] is not False, seen
    figures = await check_after(load, service, database_dsn, marks["fault_done"], ledger_calls)

    # The killed node comes back as a replica of the new leader (pg_rewind if needed).
    rejoin_started = time.monotonic()
    cluster.start_node(old_leader)
    settled(cluster, timeout=60)
    old_leader.remember_postmaster()

    figures.update(
        scenario="leader node killed (kill -9 of Patroni and the postmaster)",
        old_leader=old_leader.name,
        new_leader=new_leader.name,
        time_to_first_success_s=round(marks["first_ok"] - marks["fault_done"], 2),
        longest_gap_between_acknowledgements_s=round(
            load.max_ack_gap(marks["fault_started"] - 1, marks["load_stopped"]), 2
        ),
        health_after_kill=health_changes(load, marks["fault_done"]),
        killed_node_rejoined_s=round(time.monotonic() - rejoin_started, 1),
        service_saw=seen,
    )
    failover_results["A_leader_killed"] = figures
    report("failover_leader_killed", figures)


async def test_switchover(
    cluster: PatroniCluster,
    service: ServiceProcess,
    database_dsn: str,
    failover_results: dict[str, Any],
    ledger_calls: list[Call],
) -> None:
    """B: graceful `patronictl switchover` to the synchronous standby under load."""
    settled(cluster)
    old_leader, candidate = cluster.leader(), cluster.sync_standby()
    assert old_leader is not None and candidate is not None
    load = KeyedLoad(service.target, "switchover", CALLERS)
    changes_before = failover_report(service)["timeline_changes"]

    marks = await run_fault(load, lambda: cluster.switchover(candidate), service)

    assert cluster.wait_leader(not_=old_leader) is candidate
    seen = wait_failover_seen(service, changes_before)
    assert seen["timeline"] == leader_timeline(cluster, candidate), seen
    assert seen["checkpoint_comparison"]["leaves_missing"] == 0, seen
    assert seen["checkpoint_comparison"]["root_matches"] is not False, seen
    figures = await check_after(load, service, database_dsn, marks["fault_started"], ledger_calls)
    settled(cluster)
    figures.update(
        scenario="graceful switchover (patronictl switchover)",
        old_leader=old_leader.name,
        new_leader=candidate.name,
        switchover_command_s=round(marks["fault_done"] - marks["fault_started"], 2),
        time_to_first_success_s=round(marks["first_ok"] - marks["fault_done"], 2),
        longest_gap_between_acknowledgements_s=round(
            load.max_ack_gap(marks["fault_started"], marks["load_stopped"]), 2
        ),
        health_after_switchover=health_changes(load, marks["fault_started"]),
        service_saw=seen,
    )
    failover_results["B_switchover"] = figures
    report("failover_switchover", figures)


async def test_writes_frozen(
    cluster: PatroniCluster,
    service: ServiceProcess,
    database_dsn: str,
    failover_results: dict[str, Any],
    ledger_calls: list[Call],
) -> None:
    """C: the synchronous standby stops receiving WAL; commits would wait forever."""
    settled(cluster)
    leader = cluster.leader()
    assert leader is not None
    load = KeyedLoad(service.target, "freeze", CALLERS // 2, call_deadline=30.0)
    changes_before = failover_report(service)["timeline_changes"]
    stopped: list[psutil.Process] = []

    def freeze() -> None:
        # Every standby: Patroni (synchronous_mode, not strict) would otherwise name the
        # other one synchronous. A stopped walreceiver keeps its connection, so the
        # leader still lists it as streaming and nothing else notices.
        for node in cluster.replicas():
            for receiver in node.children("walreceiver"):
                receiver.send_signal(signal.SIGSTOP)
                stopped.append(receiver)
        assert stopped, "no walreceiver to stop"

    def thaw() -> None:
        for receiver in stopped:
            with contextlib.suppress(psutil.Error):
                receiver.send_signal(signal.SIGCONT)

    try:
        marks = await _frozen_load(load, freeze, thaw)
    finally:
        thaw()

    frozen_at, thawed_at = marks["fault_done"], marks["thawed"]
    # Every call in flight at the freeze or started during it, and how long after the
    # later of the two it was answered; those answered while frozen must be refusals.
    during = [c for c in load.calls if c.ended >= frozen_at and c.started < thawed_at]
    slowest = max((c.ended - max(c.started, frozen_at) for c in during), default=0.0)
    answered_frozen = [c for c in during if frozen_at + 0.5 < c.ended < thawed_at]
    frozen_codes = status_codes(c.code for c in answered_frozen)
    # The calls in flight when WAL stopped flowing, and why they were refused.
    caught = [c for c in during if c.started < frozen_at and c.ended > frozen_at + 0.5]
    caught_reasons = status_codes(load.reason(c) or c.code for c in caught)
    frozen_reasons = status_codes(load.reason(c) for c in answered_frozen)
    not_serving = [t for t, s in load.health if frozen_at <= t < thawed_at and s == NOT_SERVING]
    seen = {
        "health": health_changes(load, frozen_at),
        "slowest_answer_s": round(slowest, 2),
        "answered_while_frozen": frozen_codes,
        "reasons_while_frozen": frozen_reasons,
        "in_flight_at_freeze": caught_reasons,
    }
    assert not_serving, f"readiness never NOT_SERVING while writes were frozen: {seen}"
    not_serving_after = not_serving[0] - frozen_at
    assert not_serving_after <= NOT_SERVING_WITHIN, seen
    assert slowest <= FAIL_WITHIN, seen
    assert answered_frozen, f"no call was answered while writes were frozen: {seen}"
    assert set(frozen_codes) == {"UNAVAILABLE"}, seen
    # The batch committing when WAL stopped flowing hung in COMMIT: its callers are told
    # the outcome is unknown (a retry with the same key is safe either way), never OK.
    assert frozen_reasons.get("COMMIT_OUTCOME_UNKNOWN"), seen

    figures = await check_after(load, service, database_dsn, frozen_at, ledger_calls)
    assert failover_report(service)["timeline_changes"] == changes_before  # no failover
    figures.update(
        scenario="writes frozen (every standby's walreceiver stopped)",
        leader=leader.name,
        frozen_s=round(thawed_at - frozen_at, 1),
        not_serving_after_s=round(not_serving_after, 2),
        slowest_answer_while_frozen_s=round(slowest, 2),
        answered_while_frozen=len(answered_frozen),
        codes_while_frozen=frozen_codes,
        reasons_while_frozen=frozen_reasons,
        in_flight_at_freeze=caught_reasons,
        time_to_first_success_after_thaw_s=round(marks["first_ok"] - thawed_at, 2),
        health_after_freeze=health_changes(load, frozen_at),
    )
    failover_results["C_writes_frozen"] = figures
    report("failover_writes_frozen", figures)


async def _frozen_load(load: KeyedLoad, freeze: Any, thaw: Any) -> dict[str, Any]:
    task = asyncio.create_task(load.run(LOAD_LIMIT_S))
    marks: dict[str, Any] = {}
    try:
        async with asyncio.timeout(30):
            await load.wait_acknowledged(WARMUP_ACKS // 2)
        marks["fault_started"] = time.monotonic()
        freeze()
        marks["fault_done"] = time.monotonic()
        await asyncio.sleep(FREEZE_S)
        thaw()
        marks["thawed"] = time.monotonic()
        async with asyncio.timeout(RECOVERY_LIMIT_S):
            first_ok = await load.wait_first_ok_after(marks["thawed"])
        marks["first_ok"] = first_ok.ended
        await asyncio.sleep(AFTER_S)
    finally:
        load.stop()
        await asyncio.wait_for(task, timeout=LOAD_LIMIT_S)
    marks["load_stopped"] = time.monotonic()
    return marks
