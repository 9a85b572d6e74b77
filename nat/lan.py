"""Pure. LAN discovery: a broadcast beacon (overlay datagram type 6), when to send it, and who was heard.

Two nodes behind the same NAT would otherwise talk through their router's public address (which needs
hairpinning, often missing) or through the overlay. Each node broadcasts a small beacon on its LAN; a
node that hears one learns a peer's overlay address and its *local* endpoint and can link directly.
Layout, 40 bytes::

    A1 06 | node address (20 bytes) | port u16 | mac 16     mac = HMAC-SHA256(key, first 24 bytes)[:16]

The MAC key comes from the realm's secret, so nodes of other overlays on the same LAN are ignored. The
beacon's source IP address is the sender's LAN address; ``port`` is its overlay socket's port (the
beacon may leave from another socket bound for broadcast).

Theory of operation of the scheduler: one beacon at start, then one every ``interval_s`` with +-10 %
jitter (nodes started together do not stay in step); a newcomer heard on the LAN triggers an early
beacon after a random delay of up to ``answer_spread_s`` (so it learns about us without waiting a full
interval, and a LAN of many nodes does not answer in one burst), never closer than ``min_gap_s`` to the
previous one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from random import Random

from .common import MAC_BYTES, DecodeError, Endpoint, mac, mac_ok

VERSION_BYTE = 0xA1
TYPE_BEACON = 0x06
ADDRESS_BYTES = 20
_BODY = struct.Struct(f"!BB{ADDRESS_BYTES}sH")
BEACON_BYTES = _BODY.size + MAC_BYTES

DEFAULT_INTERVAL_S = 30.0
"""Beacon period: LAN membership changes slowly, and a newcomer is answered early anyway."""
DEFAULT_MIN_GAP_S = 1.0
"""At most one beacon a second from a node, however many newcomers appear at once."""
DEFAULT_ANSWER_SPREAD_S = 0.5
"""Early answers to a newcomer are spread over this long, so a LAN of many nodes does not reply in one
burst."""
JITTER = 0.1
"""+-10 % on each interval keeps beacons of nodes that started together from staying in step."""
PEER_LIFETIME_INTERVALS = 3.5
"""A LAN peer is forgotten after missing three beacons (with jitter to spare)."""


@dataclass(frozen=True, slots=True)
class Beacon:
    address: bytes
    """The sender's 20-byte overlay address."""
    port: int
    """The sender's overlay socket port."""


def encode_beacon(beacon: Beacon, key: bytes) -> bytes:
    if len(beacon.address) != ADDRESS_BYTES or not 0 < beacon.port <= 0xFFFF:
        raise ValueError("a beacon carries a 20-byte address and a port 1-65535")
    body = _BODY.pack(VERSION_BYTE, TYPE_BEACON, beacon.address, beacon.port)
    return body + mac(key, body)


def is_beacon(datagram: bytes) -> bool:
    return len(datagram) == BEACON_BYTES and datagram[0] == VERSION_BYTE and datagram[1] == TYPE_BEACON


def decode_beacon(datagram: bytes, key: bytes) -> Beacon:
    """Decode and authenticate a beacon; raises :class:`DecodeError` only."""
    if not is_beacon(datagram):
        raise DecodeError(f"not a LAN beacon ({len(datagram)} bytes)")
    body, tag = datagram[: _BODY.size], datagram[_BODY.size :]
    if not mac_ok(key, body, tag):
        raise DecodeError("beacon MAC mismatch")
    _, _, address, port = _BODY.unpack(body)
    if port == 0:
        raise DecodeError("beacon with port 0")
    return Beacon(address, port)


class BeaconScheduler:
    """When to broadcast our beacon. ``get_timer`` / ``due(now)``: a beacon is due when ``due`` says so
    (it then schedules the next one)."""

    __slots__ = ("_interval", "_last", "_min_gap", "_next", "_rng", "_spread", "sent")

    def __init__(
        self,
        rng: Random,
        now: float,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        min_gap_s: float = DEFAULT_MIN_GAP_S,
        answer_spread_s: float = DEFAULT_ANSWER_SPREAD_S,
    ) -> None:
        if interval_s <= 0 or min_gap_s < 0 or answer_spread_s < 0:
            raise ValueError("beacon timings must be positive")
        self._rng = rng
        self._interval = interval_s
        self._min_gap = min_gap_s
        self._spread = answer_spread_s
        self._next = now
        self._last: float | None = None
        self.sent = 0

    def get_timer(self) -> float:
        return self._next

    def due(self, now: float) -> bool:
        if now < self._next:
            return False
        self._last = now
        self.sent += 1
        self._next = now + self._interval * (1 + self._rng.uniform(-JITTER, JITTER))
        return True

    def answer_newcomer(self, now: float) -> None:
        """A new LAN peer was heard: beacon early (spread, and not within ``min_gap_s`` of the last)."""
        early = now + self._rng.uniform(0.0, self._spread)
        if self._last is not None:
            early = max(early, self._last + self._min_gap)
        self._next = min(self._next, early)


@dataclass(frozen=True, slots=True)
class LanPeer:
    address: bytes
    endpoint: Endpoint
    last_heard: float


class LanDirectory:
    """The LAN peers heard recently (our own beacons, looped back by broadcast, are ignored)."""

    __slots__ = ("_lifetime", "_own", "_peers")

    def __init__(self, own_address: bytes, *, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self._own = own_address
        self._lifetime = PEER_LIFETIME_INTERVALS * interval_s
        self._peers: dict[bytes, LanPeer] = {}

    def heard(self, beacon: Beacon, src_ip: str, now: float) -> LanPeer | None:
        """Record a beacon; returns the peer if it is new or its endpoint changed (worth a link attempt
        and an early answer), else None."""
        if beacon.address == self._own:
            return None
        self.expire(now)
        endpoint = (src_ip, beacon.port)
        old = self._peers.get(beacon.address)
        peer = LanPeer(beacon.address, endpoint, now)
        self._peers[beacon.address] = peer
        return peer if old is None or old.endpoint != endpoint else None

    def expire(self, now: float) -> list[LanPeer]:
        gone = [p for p in self._peers.values() if now - p.last_heard > self._lifetime]
        for p in gone:
            del self._peers[p.address]
        return gone

    def peers(self, now: float) -> list[LanPeer]:
        self.expire(now)
        return sorted(self._peers.values(), key=lambda p: p.address)
