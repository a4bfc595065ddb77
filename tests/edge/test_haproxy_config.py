"""The edge's generated HAProxy config: limits per role and client, keyed on the token's
digest, accepted by HAProxy itself (`haproxy -c`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from jackpot_grpc.adapters import clients_file
from jackpot_grpc.adapters.clients_file import ClientRecord, ClientsFileError
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.edge import haproxy
from jackpot_grpc.edge.runner import bind
from jackpot_grpc.edge.settings import Backend, EdgeSettings, Limit, parse_limit
from testkit.tools import require_tool

GAME = ClientRecord("slots", ("game",), "a" * 64)
READER = ClientRecord("dash", ("reader",), "b" * 64, edge_rate=7, edge_in_flight=3)
REVOKED = ClientRecord("old", ("game",), "c" * 64, revoked_at="2026-01-01T00:00:00+00:00")
CERT_ONLY = ClientRecord("mtls", ("game",), None, ("mtls.example",))


def edge_settings(directory: Path, servers: int = 2) -> EdgeSettings:
    return EdgeSettings(
        grpc_bind="127.0.0.1:50051",
        rest_bind="127.0.0.1:3000",
        stats_bind="127.0.0.1:8405",
        servers=tuple(Backend("127.0.0.1", 50061 + i, 3101 + i) for i in range(servers)),
        gateways=("127.0.0.1:3010",),
        config_dir=directory,
    )


def map_of(text: str) -> dict[str, int]:
    return {key: int(value) for key, value in (line.split() for line in text.splitlines())}


def test_limits_come_from_the_role_unless_the_client_sets_its_own(tmp_path: Path) -> None:
    files = haproxy.render(edge_settings(tmp_path), [GAME, READER, REVOKED, CERT_ONLY])
    rate, in_flight = map_of(files[haproxy.RATE_MAP]), map_of(files[haproxy.IN_FLIGHT_MAP])
    # Per 100 ms window: the game role's 1000/s is 100; the reader's own 7/s rounds up to 1.
    assert rate == {"a" * 64: 100, "b" * 64: 1, "anonymous": 5}
    assert in_flight == {"a" * 64: 64, "b" * 64: 3, "anonymous": 16}
    # A revoked client's token, and a client without one, fall to the anonymous budget.
    assert "c" * 64 not in files[haproxy.RATE_MAP]


def test_a_client_with_two_roles_gets_the_larger_limits() -> None:
    both = ClientRecord("both", ("reader", "admin"), "d" * 64)
    limits = {"reader": Limit(200, 16), "admin": Limit(20, 40)}
    assert haproxy.client_limit(both, limits) == Limit(200, 40)


def test_the_grpc_refusal_is_a_trailers_only_resource_exhausted(tmp_path: Path) -> None:
    files = haproxy.render(edge_settings(tmp_path), [GAME])
    refusal = files["grpc-rate.http"]
    head = refusal.split("\r\n")
    assert head[0] == "HTTP/1.1 200 OK"
    assert "content-type: application/grpc" in head
    assert "grpc-status: 8" in head
    assert "grpc-message: edge limit: admitted calls a second for this client" in head
    assert refusal.endswith("content-length: 0\r\n\r\n")
    assert "grpc-status: 14" in files["grpc-unavailable.http"]


def test_haproxy_accepts_the_generated_config(tmp_path: Path) -> None:
    tool = require_tool("haproxy", "make edge-tools")
    config = haproxy.write(edge_settings(tmp_path, servers=3), [GAME, READER, REVOKED])
    checked = subprocess.run([tool, "-c", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = config.read_text()
    assert text.count(" proto h2 check-proto h1 port ") == 3  # each server, health-checked
    assert "option forwardfor" in text
    assert "capture" not in text  # no header, so no token, is ever logged


def test_no_raw_token_reaches_the_config(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    token = clients_file.add_client(path, "slots", "game")
    assert token is not None
    for text in haproxy.render(edge_settings(tmp_path), clients_file.load(path)).values():
        assert token not in text
        assert token[len(clients_file.TOKEN_PREFIX) :] not in text
    digest = clients_file.token_digest(token).hex()
    assert digest in haproxy.render(edge_settings(tmp_path), clients_file.load(path))["rate.map"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True, 10_000_001])
def test_a_bad_edge_limit_disables_only_its_entry(tmp_path: Path, bad: object) -> None:
    path = tmp_path / "clients.json"
    good = {"name": "ok", "roles": ["game"], "token_sha256": "e" * 64, "edge_rate": 50}
    wrong = {"name": "bad", "roles": ["game"], "token_sha256": "f" * 64, "edge_in_flight": bad}
    path.write_text(json.dumps({"version": 1, "clients": [good, wrong]}))
    document = clients_file.read(path)
    assert [r.name for r in document.records] == ["ok"]
    assert document.records[0].edge_rate == 50
    assert "edge_in_flight must be an integer from 1 to 1000000" in str(document.invalid[0])
    with pytest.raises(ClientsFileError):
        clients_file.load(path)


def test_unset_edge_limits_are_not_written(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    clients_file.add_client(path, "slots", "game")
    assert "edge_" not in path.read_text()
    clients_file.save(path, [ClientRecord("r", ("reader",), "a" * 64, edge_rate=9)])
    again = clients_file.load(path)
    assert (again[0].edge_rate, again[0].edge_in_flight) == (9, None)
    assert "edge_in_flight" not in path.read_text()


@pytest.mark.parametrize("raw", ["10", "10/", "a/b", "0/5", "5/0", "-1/3"])
def test_a_bad_role_limit_setting_is_refused_by_name(raw: str) -> None:
    with pytest.raises(ConfigError, match="JACKPOT_EDGE_LIMIT_GAME must be RATE/IN_FLIGHT"):
        parse_limit(raw, "JACKPOT_EDGE_LIMIT_GAME")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("[::]", "ipv6@:::50051 v4v6"),
        ("::1", "ipv6@::1:50051"),
        ("0.0.0.0", "0.0.0.0:50051"),
        ("127.0.0.1", "127.0.0.1:50051"),
    ],
)
def test_the_service_hosts_become_haproxy_bind_addresses(host: str, expected: str) -> None:
    assert bind(host, 50051) == expected


def test_jackpot_clients_add_and_revoke_keep_the_edge_limits_set_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    clients_file.add_client(path, "slots", "game")
    document = json.loads(path.read_text())
    document["clients"][0].update(edge_rate=25, edge_in_flight=5)
    path.write_text(json.dumps(document))
    clients_file.add_client(path, "dash", "reader")
    clients_file.revoke_client(path, "dash")
    slots = next(r for r in clients_file.load(path) if r.name == "slots")
    assert (slots.edge_rate, slots.edge_in_flight) == (25, 5)
