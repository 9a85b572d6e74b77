"""Pure. The virtual network core's configuration, its constants, and what waits for a lookup.

Shared by the core (:mod:`ipop.vnet_core`) and its receive path (:mod:`ipop.receive`).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from overlay import Address
from vnproto import REMOTE_MAC_PREFIX, ArpPacket

IPV4 = b"\x08\x00"
ARP = b"\x08\x06"
BROADCAST_MAC = b"\xff" * 6
MIN_FRAME = 34
"""An Ethernet header and a minimal IPv4 header."""

POSITIVE_TTL_S = 120.0
"""How long a mapping is trusted. Addresses change holder only when a lease ends (a minute at least)
or a node dies (then "undeliverable" or "no such mapping" corrects the cache at once), so two minutes
cost nothing in correctness, and a refresh at half of it keeps traffic from ever waiting."""
NEGATIVE_TTL_S = 3.0
"""How long "nobody holds it" is believed: a machine getting its address now holds it in a second."""
MAX_WAITING = 16
"""Packets queued per address during a lookup; a TCP handshake or a burst of pings fits."""
MAX_MAPPINGS = 65536
"""Addresses cached: a whole /16 of members."""
RELOOKUP_S = 5.0
"""A packet whose source is cached with another holder triggers a new lookup at most this often per
address (the address may have moved); otherwise it is dropped as spoofed."""
MAX_DEFERRED_ARP = 64
"""ARP requests waiting for lookups at once."""


@dataclass(frozen=True, slots=True)
class VnetConfig:
    namespace: str
    """The virtual network served; its DHT keys and packets carry it."""
    subnet: IPv4Network
    """The virtual network's addresses."""
    domain: str
    """DNS domain of the members."""
    lease_seconds: int
    """DHCP lease time, and the lifetime of every DHT record this node refreshes."""
    mtu: int
    """The virtual MTU: the largest IPv4 packet carried (the TAP device's MTU, DHCP option 26)."""
    host_mac: bytes
    """The MAC address of the machine (the TAP device's own): where received packets are written."""
    address: Address
    """This node's overlay address."""
    node_name: str
    """Registered as ``<name>.<domain>`` for the machine's address."""
    standalone: bool = False
    """True for the first node of a new overlay (no bootstrap peers): it allocates without being
    joined to anyone. Otherwise allocation waits until the overlay is joined."""
    forward_dns: bool = True
    """Forward names outside the domain upstream; False answers REFUSED."""
    routed_mtu: int = 0
    """The largest IPv4 packet the ordinary path (``OverlayService.send``: lookups, routed links,
    broadcasts) carries; 0: ``mtu``. Smaller than ``mtu`` when the data plane's fast path carries
    larger packets on direct links (a TAP with offloads, whose TCP super-frames it cuts to each path):
    the ordinary path then cuts TCP to this size and answers larger DF packets with ICMP."""

    @property
    def carried_mtu(self) -> int:
        """The largest IPv4 packet the ordinary path carries (``routed_mtu`` or ``mtu``)."""
        return self.routed_mtu or self.mtu

    @property
    def server_ip(self) -> IPv4Address:
        """The node's own address for the machine: DHCP and DNS server, the subnet's first host."""
        return self.subnet.network_address + 1


@dataclass(frozen=True, slots=True)
class OutFrame:
    """A frame from the machine waiting for a lookup of its destination."""

    frame: bytes


@dataclass(frozen=True, slots=True)
class InPacket:
    """A packet from the overlay waiting for a lookup of its source."""

    sender: Address
    kind: int
    packet: bytes


@dataclass(frozen=True, slots=True)
class ArpWait:
    """An ARP request waiting for a lookup of its target."""

    request: ArpPacket


Waiting = OutFrame | InPacket | ArpWait


def remote_mac_of(address: Address) -> bytes:
    """The node's "remote" MAC (FE:FD + 4 bytes of its overlay address): every remote member appears
    at it; derived, so it is the same after a restart and the machine's ARP cache stays right."""
    return REMOTE_MAC_PREFIX + address.to_bytes(20, "big")[:4]
