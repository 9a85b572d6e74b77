"""Pure. IPv4 packets (RFC 791): header with options, checksum, fragments recognised.

Fragments are recognised, not reassembled: a virtual network forwards them as they are, and a
responder (DHCP, DNS) only ever sees whole datagrams, so ``is_fragment`` lets a caller drop or forward
them without looking further. Trailing bytes past the total length (Ethernet pads short frames to 60
bytes) are ignored, as a host's stack does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address

from .checksum import internet_checksum
from .errors import DecodeError

MIN_HEADER_LEN = 20
MAX_HEADER_LEN = 60
"""IHL is four bits of 32-bit words: 15 * 4."""
DEFAULT_TTL = 64
"""Linux's default (net.ipv4.ip_default_ttl); replies built here look like the host's own."""
_HEADER = struct.Struct("!BBHHHBBH4s4s")
FLAG_DF = 0x4000
FLAG_MF = 0x2000
OFFSET_MASK = 0x1FFF


class IpProto(IntEnum):
    ICMP = 1
    TCP = 6
    UDP = 17


@dataclass(frozen=True, slots=True)
class IPv4Packet:
    """An IPv4 packet. ``fragment_offset`` is in 8-byte units, as on the wire."""

    src: IPv4Address
    dst: IPv4Address
    protocol: int
    payload: bytes
    ttl: int = DEFAULT_TTL
    tos: int = 0
    identification: int = 0
    dont_fragment: bool = False
    more_fragments: bool = False
    fragment_offset: int = 0
    options: bytes = b""

    @property
    def is_fragment(self) -> bool:
        """Part of a fragmented datagram: the payload is not a whole UDP/TCP/ICMP message."""
        return self.more_fragments or self.fragment_offset != 0

    @property
    def header_length(self) -> int:
        return MIN_HEADER_LEN + len(self.options)

    def encode(self) -> bytes:
        if len(self.options) % 4 or len(self.options) > MAX_HEADER_LEN - MIN_HEADER_LEN:
            raise ValueError("IPv4 options must be padded to 4 bytes and at most 40 bytes")
        total = self.header_length + len(self.payload)
        if total > 0xFFFF:
            raise ValueError(f"IPv4 packet of {total} bytes")
        flags = (FLAG_DF if self.dont_fragment else 0) | (FLAG_MF if self.more_fragments else 0)
        header = bytearray(
            _HEADER.pack(
                0x40 | (self.header_length // 4),
                self.tos,
                total,
                self.identification,
                flags | self.fragment_offset,
                self.ttl,
                self.protocol,
                0,
                self.src.packed,
                self.dst.packed,
            )
            + self.options
        )
        header[10:12] = internet_checksum(header).to_bytes(2, "big")
        return bytes(header) + self.payload

    @classmethod
    def decode(cls, data: bytes, verify_checksum: bool = True) -> IPv4Packet:
        ihl, total = check_header(data, verify_checksum)
        _, tos, _, ident, frag, ttl, proto, _, src, dst = _HEADER.unpack_from(data)
        return cls(
            IPv4Address(src),
            IPv4Address(dst),
            proto,
            bytes(data[ihl:total]),
            ttl,
            tos,
            ident,
            bool(frag & FLAG_DF),
            bool(frag & FLAG_MF),
            frag & OFFSET_MASK,
            bytes(data[MIN_HEADER_LEN:ihl]),
        )


def check_header(data: bytes, verify_checksum: bool = True) -> tuple[int, int]:
    """Validate an IPv4 header; return (header length, total length). Raises only DecodeError."""
    if len(data) < MIN_HEADER_LEN:
        raise DecodeError(f"IPv4 packet of {len(data)} bytes is shorter than a header")
    if data[0] >> 4 != 4:
        raise DecodeError(f"IP version {data[0] >> 4}")
    ihl = (data[0] & 0x0F) * 4
    total = int.from_bytes(data[2:4], "big")
    if ihl < MIN_HEADER_LEN:
        raise DecodeError(f"IPv4 header length {ihl}")
    if total < ihl or total > len(data):
        raise DecodeError(f"IPv4 total length {total} with header {ihl} and {len(data)} bytes")
    if verify_checksum and internet_checksum(data[:ihl]) != 0:
        raise DecodeError("IPv4 header checksum")
    return ihl, total


def pseudo_header_sum(src: IPv4Address, dst: IPv4Address, protocol: int, length: int) -> int:
    """The one's-complement sum of the pseudo-header that UDP and TCP checksums cover (RFC 768)."""
    s, d = int(src), int(dst)
    total = (s >> 16) + (s & 0xFFFF) + (d >> 16) + (d & 0xFFFF) + protocol + length
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total
