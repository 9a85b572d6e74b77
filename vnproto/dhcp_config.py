"""Pure. The DHCP server's configuration: one frozen dataclass, every field documented.

The node builds it from its namespace settings (subnet, lease time, DNS domain, MTU), which are
themselves stored in the DHT, and from its own identity (the remote MAC it answers from).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from .ethernet import MAC_LEN

DEFAULT_MTU = 1400
"""1500 on the underlay, less 20 (IPv4) + 8 (UDP) for the overlay's datagram and room for its own
headers, encryption tag and the end-to-end envelope. The node passes its actual virtual MTU; this is
only the value used when nothing says otherwise."""


@dataclass(frozen=True, slots=True)
class DhcpServerConfig:
    server_ip: IPv4Address
    """The address the server answers from and names in option 54 (server identifier). The node's own
    virtual address in the subnet that no client may be given (IPOP used the subnet's first host)."""

    server_mac: bytes
    """The Ethernet source of every reply: the node's "remote" MAC (FE:FD + 4 random bytes)."""

    subnet: IPv4Network
    """The virtual network; option 1 (subnet mask) and 28 (broadcast) derive from it, and no address
    outside it is ever offered or acknowledged."""

    domain: str = "ipop"
    """The DNS domain of the virtual network (option 15), under which members have names."""

    dns_servers: tuple[IPv4Address, ...] = ()
    """Option 6. Empty means ``(server_ip,)``: the node answers DNS itself and forwards the rest."""

    search_list: tuple[str, ...] = ()
    """Option 119 (domain search list, RFC 3397). Empty means ``(domain,)``, so that ``ping bob``
    finds ``bob.<domain>``."""

    router: IPv4Address | None = None
    """Option 3. None (the default) sends no router: a virtual network should not capture the host's
    default route. Router mode sets it to reach a LAN behind the node."""

    mtu: int = DEFAULT_MTU
    """Option 26, the interface MTU: small enough that no frame is fragmented on the underlay."""

    lease_time_s: int = 3600
    """Option 51. An hour: a client renews at half of it, so an address of a vanished client returns to
    the pool within the hour, while one renewal per half hour costs the DHT nothing."""

    offer_hold_s: float = 60.0
    """How long an offered address stays reserved for its client. A client retransmits with backoff of
    4, 8, 16, 32 s (RFC 2131 §4.1), so a minute covers a slow client's whole selecting phase."""

    allocation_timeout_s: float = 10.0
    """How long a request waits for the allocator (the DHT) before it is forgotten; the client will
    retransmit and start another attempt. Ten seconds is the overlay's handshake timeout."""

    def __post_init__(self) -> None:
        if len(self.server_mac) != MAC_LEN:
            raise ValueError("server_mac must be 6 bytes")
        if self.server_ip not in self.subnet or self.server_ip in (
            self.subnet.network_address,
            self.subnet.broadcast_address,
        ):
            raise ValueError(f"server_ip {self.server_ip} is not a host of {self.subnet}")
        if self.router is not None and self.router not in self.subnet:
            raise ValueError(f"router {self.router} is outside {self.subnet}")
        if self.subnet.prefixlen > 30:
            raise ValueError(f"subnet {self.subnet} has no room for clients")
        if not 68 <= self.mtu <= 0xFFFF:
            raise ValueError(f"mtu {self.mtu}: RFC 2132 §5.1 requires at least 68")
        if not 60 <= self.lease_time_s < 0xFFFFFFFF:
            raise ValueError(f"lease_time_s {self.lease_time_s} out of range")
        if self.offer_hold_s <= 0 or self.allocation_timeout_s <= 0:
            raise ValueError("offer_hold_s and allocation_timeout_s must be positive")

    @property
    def effective_dns_servers(self) -> tuple[IPv4Address, ...]:
        return self.dns_servers or (self.server_ip,)

    @property
    def effective_search_list(self) -> tuple[str, ...]:
        return self.search_list or (self.domain,)
