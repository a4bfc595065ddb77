"""Who is calling, by address: a peer's address decoded, and `X-Forwarded-For` believed only
from a trusted proxy.

gRPC reports its peer as `ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000` (also percent-escaped,
`ipv6:%5B::1%5D:5000`), `unix:/path`; an IPv4 client of a dual-stack socket arrives as
`::ffff:127.0.0.1`. All of them are decoded to one `ipaddress` value, IPv4-mapped ones to
their IPv4 address, so a throttle or a trust check sees one caller as one address.

`X-Forwarded-For` is read from the right (the hop nearest to us) leftwards, as long as the
hop that wrote each entry is trusted; the first entry that is not an address ends the walk,
and the last good hop is then the caller. So garbage in the header never moves the blame
onto the proxy, and nothing left of an untrusted hop is believed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import unquote

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# Whom X-Forwarded-For is believed from when JACKPOT_TRUSTED_PROXIES is unset: this machine.
DEFAULT_TRUSTED_PROXIES = "127.0.0.0/8,::1"
# A unix-socket peer is on this machine: it is trusted exactly when this address is.
UNIX_PEER = IPv4Address("127.0.0.1")
_NO_PROXIES = "none"


def parse_address(text: str) -> Address | None:
    """`text` as an IP address ('::1', '[::1]', '::ffff:10.0.0.1' → 10.0.0.1); None when it
    is not one."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class Peer:
    """A transport peer: its address (None when gRPC gave none we can read) and its text."""

    address: Address | None
    text: str


def http_peer(remote: str | None) -> Peer:
    """The peer of an HTTP request, from aiohttp's `request.remote`."""
    address = parse_address(remote or "")
    return Peer(address, str(address) if address is not None else remote or "unknown")


def grpc_peer(peer: str) -> Peer:
    """The peer of a gRPC call, from `context.peer()`."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = unquote(rest).rsplit(":", 1)[0]  # drop the port
        address = parse_address(host)
        return Peer(address, str(address) if address is not None else peer)
    if kind in ("unix", "unix-abstract"):
        return Peer(UNIX_PEER, "unix")
    return Peer(None, peer)


@dataclass(frozen=True)
class TrustedProxies:
    """The addresses whose `X-Forwarded-For` is believed (JACKPOT_TRUSTED_PROXIES)."""

    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, raw: str) -> TrustedProxies:
        """Comma-separated addresses and CIDRs; `none` for nobody. ValueError naming the bad
        entry."""
        entries = [e.strip() for e in raw.split(",") if e.strip()]
        if entries == [_NO_PROXIES]:
            return cls(())
        networks: list[Network] = []
        for entry in entries:
            try:
                networks.append(ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"{entry!r} is not an address or a CIDR") from None
        return cls(tuple(networks))

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, IPv4Address | IPv6Address):
            return False
        return any(address in network for network in self.networks)

    def __str__(self) -> str:
        return ",".join(str(n) for n in self.networks) or _NO_PROXIES


LOOPBACK_PROXIES = TrustedProxies.parse(DEFAULT_TRUSTED_PROXIES)


def forwarded_entries(values: Iterable[str]) -> list[str]:
    """The entries of every X-Forwarded-For value, in order (headers may repeat)."""
    return [entry.strip() for value in values for entry in value.split(",")]


@dataclass(frozen=True)
class Caller:
    """The caller as far as it can be told: its address, and the hop that vouched for it
    (None: the caller is the transport peer itself)."""

    address: str
    via: str | None = None

    @property
    def throttle_key(self) -> str:
        # Forwarded callers are kept apart from direct ones at the same address, and do not
        # depend on which of the proxy's addresses (::1, 127.0.0.1) the call came from.
        return self.address if self.via is None else f"{self.address} (forwarded)"

    def __str__(self) -> str:
        return self.address if self.via is None else f"{self.address} via {self.via}"


def real_caller(
    peer: Peer, forwarded: list[str], trusted: TrustedProxies, *, vouched: bool = False
) -> Caller:
    """Who called: the peer, or, while the hop is trusted (listed, or `vouched` for the
    peer, a client with the gateway role), the address that hop says it saw."""
    caller: Address | None = peer.address
    believe = vouched or peer.address in trusted
    moved = False
    for entry in reversed(forwarded):
        if not believe:
            break
        address = parse_address(entry)
        if address is None:
            break  # garbage: the last good hop is the caller
        caller, moved = address, True
        believe = address in trusted
    if not moved or caller is None:
        return Caller(peer.text)
    return Caller(str(caller), via=peer.text)
