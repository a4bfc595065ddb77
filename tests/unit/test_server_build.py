"""build_server wires the parts without I/O: no database, no bound port, no running task."""

from __future__ import annotations

import asyncio
import logging
import socket

import grpc
import grpc.aio._server
import pytest

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.server import build_server
from jackpot_grpc.service.batcher import ContributionBatcher, DirectContributor

# Nothing listens on port 1: any attempt to connect would fail (and a test that waited on
# it would hang for the connect timeout), so a build that passes here did not connect.
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nothing"


def settings(**env: str) -> Settings:
    return Settings.from_env({"GRPC_HOST": "127.0.0.1", "GRPC_PORT": "50999", **env})


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_build_wires_the_parts_and_starts_nothing() -> None:
    tasks_before = asyncio.all_tasks()
    parts = build_server(settings(), UNREACHABLE)
    assert asyncio.all_tasks() == tasks_before  # no batcher, probe, sampler or audit task
    assert parts.db_pool.closed
    assert parts.service.db_pool is parts.db_pool
    assert parts.service.metrics is None  # no telemetry given
    assert isinstance(parts.contributor, ContributionBatcher)  # no thread until start()
    assert parts.batcher is parts.contributor
    assert parts.address == "127.0.0.1:50999"
    assert port_is_free(50999)
    assert parts.health_http.history is parts.sampler
    assert parts.health_http.auditor is parts.auditor
    assert parts.probe.healthy is None  # not probed yet
    router = parts.health_http.app().router
    routes = {r.resource.canonical for r in router.routes() if r.resource is not None}
    assert {"/health", "/health/database", "/health/jackpot", "/metrics"} <= routes


async def test_every_service_is_registered_as_generic_handlers_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """grpc.aio waits on one pending request per registered method for every call it
    accepts (entrypoints/registration.py): none may be registered."""
    registered: list[str] = []
    monkeypatch.setattr(
        grpc.aio._server.Server,
        "add_registered_method_handlers",
        lambda self, service, handlers: registered.append(service),
    )
    build_server(settings(), UNREACHABLE)
    assert registered == []


async def test_port_argument_overrides_the_configured_port() -> None:
    parts = build_server(settings(), UNREACHABLE, port=0)
    assert parts.address == "127.0.0.1:0"


async def test_the_retired_executor_setting_is_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """JACKPOT_BATCH_EXECUTOR chose between two batch paths; one is left (docs/DECISIONS.md):
    a deployment that still sets it starts, and its log says the setting does nothing."""
    with caplog.at_level(logging.WARNING, logger="jackpot_grpc.config"):
        parts = build_server(settings(JACKPOT_BATCH_EXECUTOR="loop"), UNREACHABLE)
    assert isinstance(parts.contributor, ContributionBatcher)
    assert parts.batcher is parts.contributor
    assert "JACKPOT_BATCH_EXECUTOR is ignored" in caplog.text


async def test_batching_off_builds_a_direct_contributor() -> None:
    parts = build_server(settings(JACKPOT_BATCHING="off"), UNREACHABLE)
    assert isinstance(parts.contributor, DirectContributor)
    assert parts.batcher is None


async def test_a_bad_history_setting_fails_the_build() -> None:
    with pytest.raises(ValueError, match="sample interval must be positive"):
        build_server(settings(JACKPOT_SAMPLE_INTERVAL="0"), UNREACHABLE)
