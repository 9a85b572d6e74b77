"""Pure. ICMP for IPv4 (RFC 792): echo, destination unreachable, and the "fragmentation needed"
message that makes path MTU discovery work (RFC 1191).

The node's virtual MTU is smaller than a physical Ethernet's, to leave room for the overlay's headers.
A host that sends a packet larger than that with DF set must be told so, or its TCP connections hang
(the "MTU black hole", the most reported failure of peer VPNs). :func:`fragmentation_needed_frame`
builds that answer as a complete frame ready to write back to the TAP device.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address

from .checksum import internet_checksum
from .errors import DecodeError
from .ethernet import EtherType, build_frame, payload_offset
from .ipv4 import IpProto, IPv4Packet, check_header

ICMP_HEADER_LEN = 8
_ICMP = struct.Struct("!BBH4s")
QUOTE_MAX = 548
"""How much of the offending datagram an error quotes: RFC 1812 §4.3.2.3 asks for as much as fits in
576 bytes (576 - 20 IP - 8 ICMP = 548); RFC 792's minimum is the header plus 8 bytes, which is what a
host needs to find the socket (ports) the error is about."""


class IcmpType(IntEnum):
    ECHO_REPLY = 0
    DEST_UNREACHABLE = 3
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11


class UnreachableCode(IntEnum):
    NET = 0
    HOST = 1
    PROTOCOL = 2
    PORT = 3
    FRAGMENTATION_NEEDED = 4
    ADMIN_PROHIBITED = 13


@dataclass(frozen=True, slots=True)
class IcmpMessage:
    """An ICMP message. ``rest`` is the 4 type-specific header bytes (identifier and sequence of an
    echo; unused and next-hop MTU of fragmentation-needed); ``payload`` follows them."""

    type: int
    code: int
    rest: bytes
    payload: bytes

    def encode(self) -> bytes:
        if len(self.rest) != 4:
            raise ValueError("the ICMP rest-of-header is 4 bytes")
        body = _ICMP.pack(self.type, self.code, 0, self.rest) + self.payload
        return body[:2] + internet_checksum(body).to_bytes(2, "big") + body[4:]

    @classmethod
    def decode(cls, data: bytes, verify_checksum: bool = True) -> IcmpMessage:
        if len(data) < ICMP_HEADER_LEN:
            raise DecodeError(f"ICMP message of {len(data)} bytes is shorter than its header")
        if verify_checksum and internet_checksum(data) != 0:
            raise DecodeError("ICMP checksum")
        icmp_type, code, _, rest = _ICMP.unpack_from(data)
        return cls(icmp_type, code, rest, bytes(data[ICMP_HEADER_LEN:]))

    # -- echo -------------------------------------------------------------------------------------

    @classmethod
    def echo(cls, identifier: int, sequence: int, data: bytes, reply: bool = False) -> IcmpMessage:
        kind = IcmpType.ECHO_REPLY if reply else IcmpType.ECHO_REQUEST
        return cls(kind, 0, struct.pack("!HH", identifier, sequence), data)

    @property
    def is_echo(self) -> bool:
        return self.type in (IcmpType.ECHO_REQUEST, IcmpType.ECHO_REPLY) and self.code == 0

    @property
    def identifier(self) -> int:
        return int.from_bytes(self.rest[0:2], "big")

    @property
    def sequence(self) -> int:
        return int.from_bytes(self.rest[2:4], "big")

    def echo_reply(self) -> IcmpMessage:
        """The reply to this echo request: same identifier, sequence and data."""
        if self.type != IcmpType.ECHO_REQUEST:
            raise ValueError("only an echo request has a reply")
        return IcmpMessage(IcmpType.ECHO_REPLY, 0, self.rest, self.payload)

    # -- errors -----------------------------------------------------------------------------------

    @classmethod
    def unreachable(cls, code: int, original: bytes, next_hop_mtu: int = 0) -> IcmpMessage:
        """Destination unreachable quoting ``original`` (the offending IPv4 packet, header first).
        ``next_hop_mtu`` is only meaningful for code 4 (RFC 1191 §4)."""
        if not 0 <= next_hop_mtu <= 0xFFFF:
            raise ValueError("next-hop MTU out of range")
        return cls(IcmpType.DEST_UNREACHABLE, code, struct.pack("!HH", 0, next_hop_mtu), original[:QUOTE_MAX])

    @property
    def next_hop_mtu(self) -> int:
        return int.from_bytes(self.rest[2:4], "big")


def needs_fragmentation(frame: bytes, mtu: int) -> bool:
    """True if ``frame`` carries an IPv4 packet larger than ``mtu`` with DF set: it cannot be carried
    and the sender must receive :func:`fragmentation_needed_frame`. Reads a few bytes only."""
    try:
        ethertype, offset = payload_offset(frame)
    except DecodeError:
        return False
    if ethertype != EtherType.IPV4 or len(frame) < offset + 20:
        return False
    total = int.from_bytes(frame[offset + 2 : offset + 4], "big")
    return total > mtu and bool(frame[offset + 6] & 0x40)


def fragmentation_needed_frame(frame: bytes, mtu: int, router_ip: IPv4Address, router_mac: bytes) -> bytes:
    """The ICMP "fragmentation needed" (type 3, code 4, next-hop MTU ``mtu``) answering the IPv4 frame
    ``frame``, from ``router_ip``/``router_mac`` back to the frame's sender. Raises DecodeError if the
    frame is not IPv4. RFC 1122 §3.2.2 forbids errors about ICMP errors and fragments past the first,
    so the caller should not send one for those; this function refuses with DecodeError as well."""
    ethertype, offset = payload_offset(frame)
    if ethertype != EtherType.IPV4:
        raise DecodeError("not an IPv4 frame")
    packet = frame[offset:]
    ihl, total = check_header(packet, verify_checksum=False)
    if int.from_bytes(packet[6:8], "big") & 0x1FFF:
        raise DecodeError("no ICMP error about a non-first fragment")
    if packet[9] == IpProto.ICMP and len(packet) > ihl and packet[ihl] not in (0, 8):
        raise DecodeError("no ICMP error about an ICMP error")
    src = IPv4Address(packet[12:16])
    message = IcmpMessage.unreachable(UnreachableCode.FRAGMENTATION_NEEDED, packet[:total], mtu)
    reply = IPv4Packet(router_ip, src, IpProto.ICMP, message.encode()).encode()
    return build_frame(frame[6:12], router_mac, EtherType.IPV4, reply)
