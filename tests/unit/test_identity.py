"""The pieces of caller identity: the clients file, the registry, the throttle, the roles."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from jackpot.v1 import jackpot_pb2

from jackpot_grpc.adapters import clients_file
from jackpot_grpc.domain.roles import ROLE_METHODS, may_call
from jackpot_grpc.entrypoints.auth import bearer_token, caller_of
from jackpot_grpc.entrypoints.client_registry import ClientRegistry
from jackpot_grpc.security.failure_throttle import FailureThrottle
from jackpot_grpc.security.open_mode import is_loopback


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_every_service_method_has_a_role() -> None:
    methods = {m.name for m in jackpot_pb2.DESCRIPTOR.services_by_name["JackpotService"].methods}
    assert methods == set().union(*ROLE_METHODS.values())
    assert may_call({"game"}, "Win") and not may_call({"reader", "admin"}, "Win")
    assert not may_call({"nonsense"}, "GetPools")


def test_the_file_holds_hashes_only_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    token = clients_file.add_client(path, "slots", "game")
    assert token is not None and token.startswith("jpk_") and len(token) > 40
    text = path.read_text()
    assert token not in text
    assert json.loads(text)["clients"][0]["token_sha256"] == clients_file.token_digest(token).hex()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(clients_file.ClientsFileError, match="already exists"):
        clients_file.add_client(path, "slots", "reader")
    with pytest.raises(clients_file.ClientsFileError, match="unknown role"):
        clients_file.add_client(path, "x", "root")


def test_a_bad_file_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    path.write_text('{"clients": [{"name": "a", "roles": ["root"]}]}')
    with pytest.raises(clients_file.ClientsFileError, match="roles must be"):
        clients_file.load(path)
    assert clients_file.load(tmp_path / "missing.json") == []


def test_each_entry_is_checked_and_named_by_its_line() -> None:
    good, bad = "ab" * 32, "z" * 64
    text = f"""{{
  "note": {{"clients": [1, 2, 3], "s": "[{{,]}}"}},
  "clients": [
    {{"name": "a", "roles": ["game"], "token_sha256": "{good}"}},
    {{"name": "b", "roles": ["game"],
     "token_sha256": "{bad}"}},
    {{"name": "c", "roles": ["reader"], "revoked_at": false}},
    {{"name": "a", "roles": ["reader"]}},
    {{"name": "d", "roles": ["admin"], "token_sha256": "{good}"}}
  ]
}}"""
    document = clients_file.parse(text, "clients.json")
    assert [r.name for r in document.records] == []  # a twice; d shares a's token
    invalid = {e.position: e for e in document.invalid}
    assert [(e.line, clients_file.name_of(e.raw)) for e in invalid.values()] == [
        (4, "a"),
        (5, "b"),
        (7, "c"),
        (8, "a"),
        (9, "d"),
    ]
    assert "token_sha256 must be 64 hex" in str(invalid[2])
    assert str(invalid[2]).startswith("entry 2 (line 5), client 'b'")
    assert "revoked_at" in str(invalid[3])
    assert "appears in entries 1, 4" in str(invalid[1])
    assert "appears in entries 1, 5" in str(invalid[5])
    with pytest.raises(clients_file.ClientsFileError, match="not valid JSON"):
        clients_file.parse("{ half", "clients.json")


def test_registry_picks_up_changes_and_keeps_the_last_good_set(tmp_path: Path) -> None:
    path, clock = tmp_path / "clients.json", Clock()
    token = clients_file.add_client(path, "slots", "game")
    assert token is not None
    registry = ClientRegistry(
        path, "admin-secret-0123456789abcdef-0123", poll_seconds=2.0, clock=clock
    )
    assert not registry.open
    client = registry.by_token(token)
    assert client is not None and (client.name, client.roles) == ("slots", frozenset({"game"}))
    admin = registry.by_token("admin-secret-0123456789abcdef-0123")
    assert admin is not None and admin.name == "admin"
    assert registry.by_token(token + "x") is None

    clients_file.revoke_client(path, "slots")
    registry.refresh()  # not yet: looked at most every 2 s
    assert registry.by_token(token) is not None
    clock.now = 2.5
    registry.refresh()
    assert registry.by_token(token) is None

    other = clients_file.add_client(path, "dash", "reader", cert_subjects=("dash.example",))
    assert other is not None
    path.write_text("{ half a file")
    clock.now = 5.0
    registry.refresh()  # invalid: the previous clients stay
    assert registry.by_token("admin-secret-0123456789abcdef-0123") is not None
    assert registry.by_certificate(["dash.example"]) is None  # never loaded


def test_no_clients_configured_is_open() -> None:
    assert ClientRegistry(None, None).open
    assert not ClientRegistry(None, "t").open


def test_throttle_blocks_then_forgets_and_stays_bounded() -> None:
    clock = Clock()
    throttle = FailureThrottle(3, 60.0, 30.0, max_peers=2, clock=clock)
    assert [throttle.failed("a") for _ in range(3)] == [False, False, True]
    assert throttle.blocked("a") and not throttle.blocked("b")
    clock.now = 31.0
    assert not throttle.blocked("a")
    throttle.failed("b")
    clock.now = 100.0  # a new window: old failures no longer count
    assert [throttle.failed("b") for _ in range(2)] == [False, False]
    throttle.failed("c")
    throttle.failed("d")
    assert len(throttle._peers) == 2


def test_callers_and_forwarded_callers() -> None:
    forwarded = [("x-forwarded-for", "1.2.3.4")]
    assert caller_of("ipv4:10.0.0.7:5123", forwarded).throttle_key == "10.0.0.7"
    assert caller_of("ipv4:127.0.0.1:5123", forwarded).throttle_key == "1.2.3.4 (forwarded)"
    assert str(caller_of("ipv4:127.0.0.1:5123", forwarded)) == "1.2.3.4 via 127.0.0.1"
    assert caller_of("ipv6:%5B::1%5D:5123", forwarded).throttle_key == "1.2.3.4 (forwarded)"
    assert caller_of("ipv6:[::1]:5123", None).throttle_key == "::1"
    # A gateway that proved its role is believed from anywhere.
    assert caller_of("ipv4:10.0.0.7:5123", forwarded, vouched=True).address == "1.2.3.4"


def test_bearer_token_parsing() -> None:
    assert bearer_token([("authorization", "Bearer  abc ")]) == "abc"
    assert bearer_token([("authorization", "bearer abc")]) == "abc"
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token([("authorization", "Bearer ")]) is None
    assert bearer_token(None) is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("[::]", False), ("", False),
     ("10.0.0.1", False), ("::ffff:10.0.0.1", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
