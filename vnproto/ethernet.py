"""Pure. Ethernet II frames, with 802.1Q/802.1ad tags carried through unchanged.

A MAC address is plain ``bytes`` of length 6: it is hashed, compared and sliced on every frame, and a
wrapper class would cost an allocation per frame for nothing. ``mac_to_str``/``mac_from_str`` convert
for logs and configuration.

The node reads a frame from its TAP device and, most of the time, only needs its EtherType and the
IPv4 destination; :func:`payload_offset` and :func:`ipv4_dst` answer that from a few bytes without
decoding the frame. :class:`EthernetFrame` is the full decode, for the control plane and for tests.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address
from random import Random

from .errors import DecodeError

MAC_LEN = 6
HEADER_LEN = 14
"""Destination, source, EtherType."""
TAG_LEN = 4
"""One 802.1Q or 802.1ad tag: TPID and TCI."""
MAX_TAGS = 2
"""Q-in-Q carries two tags; more is not a frame any switch would forward, so it is refused."""
BROADCAST_MAC = b"\xff" * MAC_LEN
ZERO_MAC = b"\x00" * MAC_LEN
REMOTE_MAC_PREFIX = b"\xfe\xfd"
"""IPOP's convention for the MAC that a node answers ARP with on behalf of remote members: FE:FD is a
locally administered unicast prefix no vendor uses, followed by four random bytes, one per node."""


class EtherType(IntEnum):
    IPV4 = 0x0800
    ARP = 0x0806
    VLAN = 0x8100
    IPV6 = 0x86DD
    QINQ = 0x88A8


_TAG_TPIDS = frozenset({EtherType.VLAN, EtherType.QINQ, 0x9100})
_HEADER = struct.Struct("!6s6sH")


def mac_to_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def mac_from_str(text: str) -> bytes:
    """Parse ``aa:bb:cc:dd:ee:ff`` (or with dashes). Raises ValueError: this reads configuration."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != MAC_LEN or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


def random_remote_mac(rng: Random) -> bytes:
    """A node's "remote" MAC: FE:FD followed by four bytes from ``rng``."""
    return REMOTE_MAC_PREFIX + rng.randbytes(4)


@dataclass(frozen=True, slots=True)
class EthernetFrame:
    """An Ethernet II frame. ``tags`` holds the raw 4-byte 802.1Q/802.1ad tags in wire order, so a
    frame decodes and re-encodes to the same bytes; ``ethertype`` is the inner one. The frame check
    sequence is not part of the frame here: TAP devices and packet sockets neither give nor want it."""

    dst: bytes
    src: bytes
    ethertype: int
    payload: bytes
    tags: tuple[bytes, ...] = ()

    def encode(self) -> bytes:
        if len(self.dst) != MAC_LEN or len(self.src) != MAC_LEN:
            raise ValueError("MAC addresses are 6 bytes")
        if not 0 <= self.ethertype <= 0xFFFF or any(len(t) != TAG_LEN for t in self.tags):
            raise ValueError("bad EtherType or tag")
        return b"".join((self.dst, self.src, *self.tags, self.ethertype.to_bytes(2, "big"), self.payload))

    @classmethod
    def decode(cls, data: bytes) -> EthernetFrame:
        ethertype, offset = _parse_header(data)
        tags = tuple(data[12 + i : 16 + i] for i in range(0, offset - HEADER_LEN, TAG_LEN))
        return cls(data[0:6], data[6:12], ethertype, data[offset:], tags)

    @property
    def is_broadcast(self) -> bool:
        return self.dst == BROADCAST_MAC


_UNTAGGED = {b"\x08\x00": (EtherType.IPV4, HEADER_LEN), b"\x08\x06": (EtherType.ARP, HEADER_LEN)}
"""The common cases, answered by one dictionary lookup: this runs once per frame on the data plane."""


def _parse_header(data: bytes) -> tuple[int, int]:
    if len(data) >= HEADER_LEN:
        known = _UNTAGGED.get(data[12:14])
        if known is not None:
            return known
    if len(data) < HEADER_LEN:
        raise DecodeError(f"Ethernet frame of {len(data)} bytes is shorter than its header")
    offset = 12
    ethertype = int.from_bytes(data[12:14], "big")
    tags = 0
    while ethertype in _TAG_TPIDS:
        tags += 1
        offset += TAG_LEN
        if tags > MAX_TAGS:
            raise DecodeError("more than two VLAN tags")
        if len(data) < offset + 2:
            raise DecodeError("Ethernet frame truncated inside a VLAN tag")
        ethertype = int.from_bytes(data[offset : offset + 2], "big")
    if ethertype < 0x0600:
        raise DecodeError(f"802.3 length field {ethertype}, not an Ethernet II EtherType")
    return ethertype, offset + 2


def payload_offset(frame: bytes) -> tuple[int, int]:
    """(inner EtherType, offset of the payload) of an Ethernet II frame, skipping VLAN tags."""
    return _parse_header(frame)


def build_frame(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    """An untagged frame; the cheap path for replies the node writes to its TAP device."""
    return dst + src + ethertype.to_bytes(2, "big") + payload


def ipv4_dst(frame: bytes) -> IPv4Address | None:
    """The IPv4 destination of a frame, or None if it is not a (long enough) IPv4 frame. Reads four
    bytes; decodes nothing else. The data plane calls this once per frame."""
    raw = ipv4_dst_bytes(frame)
    return None if raw is None else IPv4Address(raw)


def ipv4_dst_bytes(frame: bytes) -> bytes | None:
    """As :func:`ipv4_dst`, as the four raw bytes (cheaper to use as a dictionary key)."""
    if len(frame) >= 34 and frame[12:14] == b"\x08\x00":
        return frame[30:34]
    try:
        ethertype, offset = _parse_header(frame)
    except DecodeError:
        return None
    if ethertype != EtherType.IPV4 or len(frame) < offset + 20:
        return None
    return frame[offset + 16 : offset + 20]


def ipv4_src(frame: bytes) -> IPv4Address | None:
    """The IPv4 source of a frame, or None if it is not a (long enough) IPv4 frame."""
    try:
        ethertype, offset = _parse_header(frame)
    except DecodeError:
        return None
    if ethertype != EtherType.IPV4 or len(frame) < offset + 20:
        return None
    return IPv4Address(frame[offset + 12 : offset + 16])


@dataclass(frozen=True, slots=True)
class SendFrame:
    """A responder's answer: write this frame to the TAP device (or the virtual Ethernet) as it is."""

    frame: bytes
