"""Pure. A simulated LAN: hosts that reach one another directly, without crossing the internet.

Two kinds exist. Behind a NAT box, the box's hosts form its LAN: their (private) addresses mean
something only there, so two NAT boxes may hand out the same 192.168.1.2 without confusion. Public
hosts given the same ``lan=`` label form a public LAN (a campus or a data-centre rack): they still have
internet addresses, but they reach each other in a LAN's time and hear each other's broadcasts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..events import Endpoint
from .seams import NatBox

if TYPE_CHECKING:
    from .host import SimHost


class Lan:
    """One broadcast domain. ``x``, ``y`` locate the site for the latency spread (see LatencyModel)."""

    __slots__ = ("by_port", "hosts", "ips", "label", "nat", "x", "y")

    def __init__(self, label: str, nat: NatBox | None, x: float, y: float) -> None:
        self.label = label
        """The ``lan=`` label of a public LAN, or ``nat <public ip>`` for a NAT box's LAN."""
        self.nat = nat
        """The box this LAN sits behind, or None for a public LAN."""
        self.hosts: dict[Endpoint, SimHost] = {}
        """Bound hosts by their (LAN) endpoint."""
        self.ips: dict[str, int] = {}
        """Addresses on this LAN, with how many ports each has bound; a datagram to one of these
        addresses stays on the LAN even when no port is bound there (it is then dropped)."""
        self.by_port: dict[int, list[SimHost]] = {}
        """Hosts by bound port, in the order they joined: the receivers of a broadcast to that port."""
        self.x = x
        self.y = y

    def add(self, host: SimHost) -> None:
        self.hosts[host.endpoint] = host
        self.ips[host.ip] = self.ips.get(host.ip, 0) + 1
        self.by_port.setdefault(host.port, []).append(host)

    def remove(self, host: SimHost) -> None:
        del self.hosts[host.endpoint]
        left = self.ips[host.ip] - 1
        if left:
            self.ips[host.ip] = left
        else:
            del self.ips[host.ip]
        peers = self.by_port[host.port]
        peers.remove(host)
        if not peers:
            del self.by_port[host.port]

    def __repr__(self) -> str:
        return f"Lan({self.label!r}, {len(self.hosts)} hosts)"
