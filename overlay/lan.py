"""Pure. LAN discovery at run time: beacons on the LAN's broadcast addresses, and links over the LAN.

Two members behind one NAT would otherwise reach each other through their router's public address
(hairpinning, which many routers lack) or through a relay. Each node broadcasts an authenticated beacon
(``nat.lan``: its overlay address and port, MAC'd under the realm key) to the broadcast address of each
of its LANs, which the I/O layer supplies (``targets``); an empty list turns discovery off.

A beacon from a member not heard before (or heard at another endpoint) is answered early with our own
beacon (the scheduler spreads the answers). If we already have a link to that member over another path
(its router's public address, a relay), a link handshake goes straight to the LAN endpoint, and the link
moves to the local path when it completes (``Connector._set_path``). New links are not opened just
because a member is near (a LAN of N members would get N^2 links): every later link attempt to a LAN
peer (shortcuts when traffic flows, ring and far links) sends its handshake to the LAN endpoint first
(``endpoint_of``), while the connect-to-me and punch still run as the fallback.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from nat import Beacon, BeaconScheduler, DecodeError, LanDirectory, decode_beacon, encode_beacon

from .address import Address, short
from .events import Endpoint

if TYPE_CHECKING:
    from .node import OverlayNode

log = logging.getLogger(__name__)


class LanDiscovery:
    __slots__ = ("_armed_at", "directory", "links_moved", "node", "port", "scheduler", "targets")

    def __init__(self, node: OverlayNode, targets: tuple[Endpoint, ...], port: int, now: float) -> None:
        self.node = node
        self.targets = targets
        self.port = port
        own = node.address.to_bytes(20, "big")
        self.directory = LanDirectory(own)
        self.scheduler = BeaconScheduler(node.rng, now)
        self.links_moved = 0
        self._armed_at: float | None = None
        if targets and port:
            self._arm()

    def _arm(self) -> None:
        """One pending timer at a time: an early answer replaces the later deadline (which then fires
        harmlessly) instead of starting a second chain of timers."""
        when = self.scheduler.get_timer()
        if self._armed_at is None or when < self._armed_at:
            self._armed_at = when
            self.node.set_timer(when, "lan", None)

    @property
    def enabled(self) -> bool:
        return bool(self.targets and self.port)

    def on_timer(self, now: float) -> None:
        if not self.enabled:
            return
        if self._armed_at is not None and now >= self._armed_at:
            self._armed_at = None
        if self.scheduler.due(now):
            beacon = encode_beacon(Beacon(self.node.address.to_bytes(20, "big"), self.port), self._key)
            for target in self.targets:
                self.node.transmit(beacon, target, now)
            self.node.counters["tx_beacon"] += 1
        self._arm()

    @property
    def _key(self) -> bytes:
        return self.node.security.netkey

    def on_beacon(self, data: bytes, src: Endpoint, now: float) -> None:
        """A beacon datagram from ``src`` (bad ones are counted and dropped)."""
        node = self.node
        if not self.enabled:
            node.counters["rx_beacon_ignored"] += 1
            return
        try:
            beacon = decode_beacon(data, self._key)
        except DecodeError:
            node.counters["rx_dropped_bad_beacon"] += 1
            return
        node.counters["rx_beacon"] += 1
        address = Address(int.from_bytes(beacon.address, "big"))
        if self.directory.heard(beacon, src[0], now) is not None:
            self.scheduler.answer_newcomer(now)
            self._arm()
            log.info("%s LAN peer %s at %s:%d", node.log_prefix, short(address), src[0], beacon.port)
        if address != node.address:
            self.link(address, (src[0], beacon.port), now)  # every beacon: links made since move too

    def link_up(self, peer: Address, now: float) -> None:
        """A link to ``peer`` was established: onto the LAN with it if the peer is a LAN peer."""
        endpoint = self.endpoint_of(peer, now)
        if endpoint is not None:
            self.link(peer, endpoint, now)

    def link(self, peer: Address, endpoint: Endpoint, now: float) -> None:
        """Move an existing link to ``peer`` onto its LAN ``endpoint`` (see the module docstring)."""
        node = self.node
        link = node.table.get(peer)
        if link is None or link.endpoint == endpoint or node.connector.busy(peer):
            return
        self.links_moved += 1
        node.connector.connect_local(peer, endpoint, 0, now)

    def endpoint_of(self, peer: Address, now: float) -> Endpoint | None:
        """``peer``'s LAN endpoint, if it was heard on one of our LANs recently."""
        if not self.enabled:
            return None
        key = peer.to_bytes(20, "big")
        return next((p.endpoint for p in self.directory.peers(now) if p.address == key), None)

    def status(self, now: float) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "broadcast": [f"{host}:{port}" for host, port in self.targets],
            "beacons_sent": self.scheduler.sent,
            "links_moved": self.links_moved,
            "peers": [
                {"peer": p.address.hex(), "endpoint": f"{p.endpoint[0]}:{p.endpoint[1]}"}
                for p in self.directory.peers(now)
            ],
        }
