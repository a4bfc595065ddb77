"""Peer addresses as gRPC and HTTP report them, and whom X-Forwarded-For is believed from."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from jackpot_grpc.config import Settings
from jackpot_grpc.config_error import ConfigError
from jackpot_grpc.transport.peer_address import (
    LOOPBACK_PROXIES,
    TrustedProxies,
    forwarded_entries,
    grpc_peer,
    http_peer,
    parse_address,
    real_caller,
)


@pytest.mark.parametrize(
    ("peer", "address"),
    [("ipv4:127.0.0.1:5000", "127.0.0.1"), ("ipv6:[::1]:5000", "::1"),
     ("ipv6:%5B::1%5D:5000", "::1"), ("ipv6:%5B::ffff:127.0.0.1%5D:5000", "127.0.0.1"),
     ("ipv6:[fe80::1%25eth0]:5000", "fe80::1%eth0"), ("ipv6:[2001:db8::7]:443", "2001:db8::7")],
)  # fmt: skip
def test_grpc_peers_are_decoded(peer: str, address: str) -> None:
    decoded = grpc_peer(peer)
    assert decoded.address == ip_address(address)
    assert decoded.text == address


def test_local_and_unknown_peers() -> None:
    assert grpc_peer("unix:/run/jackpot.sock").address in LOOPBACK_PROXIES
    assert grpc_peer("nonsense").address is None
    assert http_peer("::ffff:10.1.2.3").text == "10.1.2.3"
    assert http_peer(None).address is None


@pytest.mark.parametrize("text", ["", "ü", "1.2.3", "1.2.3.4:80", "unknown", "::1]", "%31.2.3.4"])
def test_what_is_not_an_address(text: str) -> None:
    assert parse_address(text) is None


def test_forwarded_for_is_believed_only_while_the_hop_is_trusted() -> None:
    trusted = TrustedProxies.parse("10.0.0.0/8, 192.0.2.5")
    proxy = grpc_peer("ipv4:10.1.1.1:80")
    chain = forwarded_entries(["6.6.6.6, 203.0.113.9", "192.0.2.5"])
    # 10.1.1.1 and 192.0.2.5 are trusted proxies, 203.0.113.9 is not: it is the caller.
    assert str(real_caller(proxy, chain, trusted)) == "203.0.113.9 via 10.1.1.1"
    # From an untrusted peer nothing is believed.
    assert str(real_caller(grpc_peer("ipv4:198.51.100.1:80"), chain, trusted)) == "198.51.100.1"
    # Garbage ends the walk at the last good hop, never at the proxy's own address alone.
    assert real_caller(proxy, ["203.0.113.9", "ü"], trusted).address == "10.1.1.1"
    assert real_caller(proxy, ["ü", "203.0.113.9"], trusted).address == "203.0.113.9"


def test_trusted_proxies_setting() -> None:
    assert Settings.from_env({}).auth.trusted_proxies == LOOPBACK_PROXIES
    assert ip_address("::1") in LOOPBACK_PROXIES and ip_address("127.0.0.9") in LOOPBACK_PROXIES
    nobody = Settings.from_env({"JACKPOT_TRUSTED_PROXIES": "none"}).auth.trusted_proxies
    assert ip_address("127.0.0.1") not in nobody and str(nobody) == "none"
    listed = Settings.from_env({"JACKPOT_TRUSTED_PROXIES": "10.0.0.0/8, 2001:db8::/32"})
    assert ip_address("10.9.9.9") in listed.auth.trusted_proxies
    assert ip_address("2001:db8::1") in listed.auth.trusted_proxies
    with pytest.raises(ConfigError, match=r"JACKPOT_TRUSTED_PROXIES.*'10\.0\.0\.0/33'"):
        Settings.from_env({"JACKPOT_TRUSTED_PROXIES": "10.0.0.0/33"})
