"""Pure. What every part of ``nat`` shares: the underlay endpoint type, the one exception a decoder may
raise, and the truncated HMAC that authenticates punch probes and LAN beacons.

``Endpoint`` is the same structural type as the overlay's (``tuple[str, int]``), so the overlay passes
its endpoints straight in; ``nat`` never imports the overlay (it sits below it).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from functools import lru_cache

Endpoint = tuple[str, int]
"""An underlay UDP endpoint: (IPv4 or IPv6 address text, port)."""

MAC_BYTES = 16
"""Truncated HMAC-SHA256 tag length of punch probes and beacons: 128 bits is beyond any online forgery
and matches the overlay's handshake MAC, so one key derivation serves both."""


class DecodeError(ValueError):
    """Bytes that do not decode (truncated, malformed, wrong MAC). The only exception a ``nat`` decoder
    lets out; a receive path counts it and drops the datagram."""


def mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 of ``data`` under ``key``, truncated to :data:`MAC_BYTES`."""
    return hmac.new(key, data, hashlib.sha256).digest()[:MAC_BYTES]


def mac_ok(key: bytes, data: bytes, tag: bytes) -> bool:
    """Constant-time check of a tag made by :func:`mac`."""
    return hmac.compare_digest(mac(key, data), tag)


def format_endpoint(endpoint: Endpoint) -> str:
    """``1.2.3.4:5`` or ``[2001:db8::1]:5`` (the bracket form keeps an IPv6 address readable)."""
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def canonical(endpoint: Endpoint) -> Endpoint:
    """The endpoint with its address in canonical text form, so that two spellings of one IPv6 address
    compare equal. Raises ``ValueError`` on an address that is not an IP address (our own misuse).

    Memoised (bounded): parsing an address costs ~3 us, and every node of a simulated overlay keeps
    tens of observed endpoints; sharing one tuple per endpoint saved ~8 KB per node at N = 300
    (docs/simscale.md). Failures are not cached, so hostile input cannot fill the cache with them."""
    host, port = endpoint
    return _canonical(host, port)


@lru_cache(maxsize=65536)
def _canonical(host: str, port: int) -> Endpoint:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    return (str(ipaddress.ip_address(host)), port)


_PRIVATE_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
)
"""Address ranges that never route across the internet. Spelled out rather than taken from
``ipaddress``'s ``is_private``, which also counts the documentation ranges (198.51.100/24, 203.0.113/24)
that the NAT lab uses as its *public* internet."""


def is_private(host: str) -> bool:
    """True for addresses that are never reachable across the internet (RFC 1918, CGNAT 100.64/10,
    loopback, link-local, ULA): a node behind a NAT advertises them as host candidates only."""
    addr = ipaddress.ip_address(host)
    return any(addr.version == net.version and addr in net for net in _PRIVATE_NETS)
