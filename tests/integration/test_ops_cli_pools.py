"""`jackpot config update` reserve/overflow options, `config show`/`validate` of those fields,
and `jackpot pool suspend | resume`, against a real server on real PostgreSQL over a real
channel (the commands run as `jackpot` runs them; see test_ops_cli.py).

Default pools: minor seed 10,000 at 0.005, major 100,000 at 0.003, mega 1,000,000 at 0.002.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import RunningServer
from testkit.calls import error_reason
from testkit.ops_commands import ops, ops_json, ops_json_sync, run_ops
from testkit.random_refs import random_game_id, random_key, random_user

Stub = jackpot_pb2_grpc.JackpotServiceStub
MINOR, MAJOR = pb.JACKPOT_GROUP_MINOR, pb.JACKPOT_GROUP_MAJOR


def grpc_target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


async def configs(stub: Stub) -> dict[int, pb.PoolConfig]:
    reply = await stub.GetConfig(pb.GetConfigRequest())
    return {p.group: p for p in reply.pools}


async def pools(stub: Stub) -> dict[int, pb.Pool]:
    reply = await stub.GetPools(pb.GetPoolsRequest())
    return {p.group: p for p in reply.pools}


async def test_each_new_option_changes_what_get_config_returns(
    server: RunningServer, ops_settings: Settings, stub: Stub
) -> None:
    update = ("config", "update", "--grpc-target", grpc_target(server), "--group", "minor")

    code, data = await ops_json(ops_settings, *update, "--reserve-rate", "0.001")
    assert code == 0 and data["audit_id"] > 0
    assert data["config"]["reserve_rate"] == "0.0010000000"
    minor = (await configs(stub))[MINOR]
    assert minor.reserve_rate.value == "0.0010000000" and minor.version == 2

    # A target alone means DIVERT.
    code, data = await ops_json(ops_settings, *update, "--overflow-target", "major")
    assert code == 0
    assert (data["config"]["overflow_policy"], data["config"]["overflow_target"]) == (
        "divert",
        "major",
    )
    minor = (await configs(stub))[MINOR]
    assert minor.overflow_policy == pb.OVERFLOW_POLICY_DIVERT
    assert minor.overflow_target == MAJOR and minor.version == 3

    code, data = await ops_json(ops_settings, *update, "--overflow-policy", "accumulate")
    assert code == 0 and data["config"]["overflow_target"] is None
    minor = (await configs(stub))[MINOR]
    assert minor.overflow_policy == pb.OVERFLOW_POLICY_ACCUMULATE
    assert minor.overflow_target == pb.JACKPOT_GROUP_UNSPECIFIED and minor.version == 4

    # Policy and target together, on another pool.
    code, _ = await ops_json(
        ops_settings,
        "config",
        "update",
        "--grpc-target",
        grpc_target(server),
        "--group",
        "major",
        "--overflow-policy",
        "divert",
        "--overflow-target",
        "mega",
    )
    assert code == 0
    major = (await configs(stub))[MAJOR]
    assert (major.overflow_policy, major.overflow_target) == (
        pb.OVERFLOW_POLICY_DIVERT,
        pb.JACKPOT_GROUP_MEGA,
    )

    # Scheduled for the next win: in force unchanged, the pending change shown.
    code, data = await ops_json(ops_settings, *update, "--reserve-rate", "0.002", "--at-next-win")
    assert code == 0 and data["scheduled"] is True
    schedule_id = data["schedule_id"]
    minor = (await configs(stub))[MINOR]
    assert minor.reserve_rate.value == "0.0010000000"
    assert minor.pending_config.reserve_rate.value == "0.0020000000"
    assert minor.pending_config.schedule_id == schedule_id

    code, shown = await ops_json(
        ops_settings, "config", "show", "--grpc-target", grpc_target(server)
    )
    assert code == 0
    row = shown["pools"][0]
    assert (row["reserve_rate"], row["overflow_policy"], row["overflow_target"]) == (
        "0.0010000000",
        "accumulate",
        None,
    )
    assert row["pending_config"]["reserve_rate"] == "0.0020000000"
    assert row["pending_config"]["schedule_id"] == schedule_id
    assert shown["pools"][1]["overflow_target"] == "mega"
    # An untouched pool's rate in the API's form, as contribution_rate is (never "0").
    assert shown["pools"][2]["reserve_rate"] == "0.0000000000"
    assert shown["pools"][2]["pending_config"] is None
    code, text = await ops(ops_settings, "config", "show", "--grpc-target", grpc_target(server))
    assert code == 0
    assert "overflow_policy" in text and "pending" in text
    assert f"reserve_rate=0.0020000000 (#{schedule_id})" in text

    code, shown_db = await ops_json(ops_settings, "config", "show", "--from-db")
    assert code == 0
    assert shown_db["pools"][0]["pending_config"]["reserve_rate"] == "0.0020000000"
    assert shown_db["pools"][1]["overflow_policy"] == "divert"
    # What show writes, validate reads back (the database's config, too).
    code, data = await ops_json(ops_settings, "config", "validate")
    assert code == 0 and data["violations"] == []


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (("--reserve-rate", "abc"), "reserve_rate: 'abc' is not a decimal number"),
        (("--reserve-rate", "1.5"), "reserve_rate: must be between 0 and 1 (--reserve-rate)"),
        (("--reserve-rate", "0.0000000000001"), "(--reserve-rate)"),
        # With the rates of all three pools (0.01), 0.995 more would pass 1.
        (("--reserve-rate", "0.995"), "(--reserve-rate)"),
        (("--overflow-target", "minor"), "must be another pool, not itself (--overflow-target)"),
        (("--overflow-policy", "divert"), "must name a pool with"),
        (
            ("--overflow-policy", "accumulate", "--overflow-target", "major"),
            "must be unset with OVERFLOW_POLICY_ACCUMULATE (--overflow-target)",
        ),
    ],
)
async def test_a_bad_value_changes_nothing_and_names_the_option(
    server: RunningServer,
    ops_settings: Settings,
    stub: Stub,
    capsys: pytest.CaptureFixture[str],
    options: tuple[str, ...],
    named: str,
) -> None:
    before = await configs(stub)
    update = ("config", "update", "--grpc-target", grpc_target(server), "--group", "minor")
    code, out = await ops(ops_settings, *update, *options)
    assert code == 1 and out == ""
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and named in err
    assert any(o in err for o in ("--reserve-rate", "--overflow-target")), err
    assert await configs(stub) == before


async def test_a_bad_choice_is_refused_before_any_call(
    server: RunningServer, ops_settings: Settings, stub: Stub, capsys: pytest.CaptureFixture[str]
) -> None:
    before = await configs(stub)
    update = ("config", "update", "--grpc-target", grpc_target(server), "--group", "minor")
    for option, value in (("--overflow-policy", "sideways"), ("--overflow-target", "jumbo")):
        with pytest.raises(SystemExit) as exited:  # argparse, as for any bad choice
            run_ops(ops_settings, *update, option, value)
        assert exited.value.code == 2
        assert f"argument {option}: invalid choice: '{value}'" in capsys.readouterr().err
    assert await configs(stub) == before
    # The dry run checks the new options locally too, and names them.
    code, data = await ops_json(ops_settings, *update, "--reserve-rate", "2", "--dry-run")
    assert code == 1
    assert data["violations"] == [
        {"field": "reserve_rate", "option": "--reserve-rate", "problem": "must be between 0 and 1"}
    ]
    code, data = await ops_json(ops_settings, *update, "--reserve-rate", "0.001", "--dry-run")
    assert code == 0 and data["after"]["reserve_rate"] == "0.0010000000"
    assert await configs(stub) == before


def _pools(**changes: dict[str, object]) -> dict[str, object]:
    base: dict[str, dict[str, object]] = {
        "minor": {"contribution_rate": "0.005", "seed_amount": 10000},
        "major": {"contribution_rate": "0.003", "seed_amount": 100000},
        "mega": {"contribution_rate": "0.002", "seed_amount": 1000000},
    }
    for group, fields in changes.items():
        base[group] |= fields
    return {"pools": base}


@pytest.mark.parametrize(
    ("changes", "violations"),
    [
        (
            {"minor": {"reserve_rate": "0.001", "overflow_target": "major"}},
            set(),
        ),
        (
            {"minor": {"reserve_rate": "2"}, "major": {"reserve_rate": "x"}},
            {"pools.minor.reserve_rate", "pools.major.reserve_rate"},
        ),
        (
            {"minor": {"overflow_policy": "sideways"}, "major": {"overflow_target": "jumbo"}},
            {"pools.minor.overflow_policy", "pools.major.overflow_target"},
        ),
        (
            {
                "minor": {"overflow_target": "minor"},
                "major": {"overflow_policy": "divert"},
                "mega": {"overflow_policy": "accumulate", "overflow_target": "minor"},
            },
            {
                "pools.minor.overflow_target",
                "pools.major.overflow_target",
                "pools.mega.overflow_target",
            },
        ),
        # A cycle of diverts is the service's rule too.
        (
            {"minor": {"overflow_target": "major"}, "major": {"overflow_target": "minor"}},
            {"pools.minor.overflow_target", "pools.major.overflow_target"},
        ),
        # Display and reserve rates count together: 0.01 + 0.995.
        ({"mega": {"reserve_rate": "0.995"}}, {"pools"}),
    ],
)
def test_validate_holds_a_files_reserve_and_overflow_to_the_services_rules(
    ops_settings: Settings,
    tmp_path: Path,
    changes: dict[str, dict[str, object]],
    violations: set[str],
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_pools(**changes)))
    code, data = ops_json_sync(ops_settings, "config", "validate", str(path))
    assert {v["field"] for v in data["violations"]} == violations, data["violations"]
    assert code == (1 if violations else 0)
    if not violations:
        minor = data["pools"][0]
        assert (minor["reserve_rate"], minor["overflow_policy"], minor["overflow_target"]) == (
            "0.0010000000",
            "divert",
            "major",
        )


async def win(stub: Stub, group: pb.JackpotGroup.ValueType) -> pb.WinResponse:
    reply: pb.WinResponse = await stub.Win(
        pb.WinRequest(
            group=group,
            game_id=random_game_id("cli-pool"),
            user_id=random_user(),
            win_amount=100,
            idempotency_key=random_key("cli-pool"),
        )
    )
    return reply


async def test_suspend_then_resume_round_trip_refusing_wins_meanwhile(
    server: RunningServer, ops_settings: Settings, stub: Stub, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ("--grpc-target", grpc_target(server))
    amount = (await pools(stub))[MINOR].current_amount

    code, data = await ops_json(
        ops_settings,
        "pool",
        "suspend",
        "minor",
        *target,
        "--reason",
        "cabinet fault",
        "--actor",
        "ops",
    )
    assert code == 0 and data["changed"] is True and data["event_id"] > 0
    assert (data["pool"]["suspended"], data["pool"]["suspended_reason"]) == (True, "cabinet fault")
    assert data["pool"]["current_amount"] == amount
    suspended_event = data["event_id"]
    minor = (await pools(stub))[MINOR]
    assert minor.suspended and minor.suspended_reason == "cabinet fault"

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await win(stub, MINOR)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused.value) == "POOL_SUSPENDED"
    await stub.Contribute(
        pb.ContributeRequest(game_id=random_game_id("cli-pool"), wager_amount=100_000)
    )
    after = await pools(stub)
    assert after[MINOR].current_amount == amount  # no share while out of play
    assert after[MAJOR].current_amount > 100_000  # the others go on

    # Suspending again writes nothing.
    code, data = await ops_json(
        ops_settings, "pool", "suspend", "minor", *target, "--reason", "again"
    )
    assert code == 0 and (data["changed"], data["event_id"]) == (False, 0)

    code, text = await ops(ops_settings, "pool", "resume", "minor", *target, "--reason", "fixed")
    assert code == 0
    assert "minor resumed (event #" in text and "suspended_reason" in text
    event = int(text.split("event #")[1].split(")")[0])
    assert event > suspended_event
    minor = (await pools(stub))[MINOR]
    assert not minor.suspended and minor.suspended_reason == ""
    paid = await win(stub, MINOR)
    assert paid.actual_win_amount == 100

    code, data = await ops_json(ops_settings, "pool", "resume", "minor", *target)
    assert code == 0 and data["event_id"] == 0  # already in play; --reason is optional

    # A suspension needs its reason.
    with pytest.raises(SystemExit) as exited:
        run_ops(ops_settings, "pool", "suspend", "minor", *target)
    assert exited.value.code == 2
    assert "--reason" in capsys.readouterr().err
    # A blank one reaches the service, which names the field.
    code, _ = await ops(ops_settings, "pool", "suspend", "minor", *target, "--reason", " ")
    assert code == 1
    assert "reason: must not be empty (--reason)" in capsys.readouterr().err
    assert not (await pools(stub))[MINOR].suspended
