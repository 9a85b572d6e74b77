"""Pure. What the DHCP server asks of the node, and the lease records it keeps and persists.

The server never allocates an address itself: addresses belong to the whole virtual network and are
claimed in the DHT, which takes network round trips. So the server emits :class:`AllocateAddress` and
the node answers later through ``DhcpServer.address_allocated`` or ``allocation_failed``. Every other
action reports a change the node must mirror in the DHT or its address map.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TypedDict

from .ethernet import SendFrame


@dataclass(frozen=True, slots=True)
class AllocateAddress:
    """Claim an address for ``client_key``, preferably ``requested_ip`` (the client's wish or its
    previous lease). Answer with ``address_allocated`` or ``allocation_failed``."""

    client_key: bytes
    requested_ip: IPv4Address | None
    hostname: str | None


@dataclass(frozen=True, slots=True)
class ReleaseAddress:
    """``ip`` is no longer used by ``client_key``: the node may give up its claim. ``reason`` is one of
    "released" (DHCPRELEASE), "expired" (lease ran out), "unclaimed" (an offer nobody took) or
    "unwanted" (the allocator answered after the client had gone)."""

    client_key: bytes
    ip: IPv4Address
    reason: str


@dataclass(frozen=True, slots=True)
class AddressDeclined:
    """The client found ``ip`` in use by someone else (DHCPDECLINE after its ARP probe): the address is
    not released but should be treated as taken (RFC 2131 §4.3.3 marks it unavailable)."""

    client_key: bytes
    ip: IPv4Address


@dataclass(frozen=True, slots=True)
class HostnameLearned:
    """The client's host name (option 12, or the first label of option 81), validated and lower-cased:
    the node registers ``<hostname>.<domain>`` in the DHT."""

    client_key: bytes
    hostname: str


@dataclass(frozen=True, slots=True)
class LeaseBound:
    """An ACK was sent (or a lease imported): ``ip`` is used by the machine with MAC ``mac`` until
    ``expires_at`` (on the clock of the ``now`` given to the server). The node keeps the DHT claim
    alive and delivers packets for ``ip`` to ``mac``."""

    client_key: bytes
    ip: IPv4Address
    mac: bytes
    hostname: str | None
    expires_at: float


DhcpAction = SendFrame | AllocateAddress | ReleaseAddress | AddressDeclined | HostnameLearned | LeaseBound


@dataclass(frozen=True, slots=True)
class Lease:
    client_key: bytes
    ip: IPv4Address
    mac: bytes
    hostname: str | None
    expires_at: float


class LeaseRecord(TypedDict):
    """A lease as plain data for the node's state file. Times are relative (``remaining_s``) so that
    a record survives a restart whatever clock the node passes as ``now``."""

    client_key: str
    ip: str
    mac: str
    hostname: str | None
    remaining_s: float
