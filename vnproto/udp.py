"""Pure. UDP datagrams (RFC 768) with the pseudo-header checksum, and the whole-frame helpers the
responders use: a UDP datagram inside IPv4 inside Ethernet, decoded or built in one call.

A received checksum of zero means the sender computed none (allowed over IPv4) and is accepted; a
computed checksum of zero is sent as 0xFFFF, as RFC 768 requires.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from .checksum import internet_checksum
from .errors import DecodeError
from .ethernet import EtherType, build_frame, payload_offset
from .ipv4 import DEFAULT_TTL, IpProto, IPv4Packet, pseudo_header_sum

UDP_HEADER_LEN = 8
_UDP = struct.Struct("!HHHH")
_PORTS = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    src_port: int
    dst_port: int
    payload: bytes

    def encode(self, src_ip: IPv4Address, dst_ip: IPv4Address) -> bytes:
        length = UDP_HEADER_LEN + len(self.payload)
        if length > 0xFFFF or not (0 <= self.src_port <= 0xFFFF and 0 <= self.dst_port <= 0xFFFF):
            raise ValueError("UDP length or port out of range")
        header = _UDP.pack(self.src_port, self.dst_port, length, 0)
        checksum = internet_checksum(header + self.payload, pseudo_header_sum(src_ip, dst_ip, 17, length))
        return _UDP.pack(self.src_port, self.dst_port, length, checksum or 0xFFFF) + self.payload

    @classmethod
    def decode(
        cls, data: bytes, src_ip: IPv4Address, dst_ip: IPv4Address, verify_checksum: bool = True
    ) -> UdpDatagram:
        if len(data) < UDP_HEADER_LEN:
            raise DecodeError(f"UDP datagram of {len(data)} bytes is shorter than its header")
        sport, dport, length, checksum = _UDP.unpack_from(data)
        if length < UDP_HEADER_LEN or length > len(data):
            raise DecodeError(f"UDP length {length} with {len(data)} bytes")
        if (
            verify_checksum
            and checksum != 0
            and internet_checksum(data[:length], pseudo_header_sum(src_ip, dst_ip, 17, length)) != 0
        ):
            raise DecodeError("UDP checksum")
        return cls(sport, dport, bytes(data[UDP_HEADER_LEN:length]))


@dataclass(frozen=True, slots=True)
class UdpFrame:
    """A UDP datagram with the addressing of the frame that carried it: what a responder needs to
    answer (MACs and IPs to swap) and what a DHCP server needs to tell client states apart (whether
    the request was broadcast or unicast)."""

    src_mac: bytes
    dst_mac: bytes
    src_ip: IPv4Address
    dst_ip: IPv4Address
    src_port: int
    dst_port: int
    payload: bytes
    ttl: int = DEFAULT_TTL

    def encode(self) -> bytes:
        return udp_frame(
            self.src_mac,
            self.dst_mac,
            self.src_ip,
            self.dst_ip,
            src_port=self.src_port,
            dst_port=self.dst_port,
            payload=self.payload,
            ttl=self.ttl,
        )


def decode_udp_frame(frame: bytes) -> UdpFrame:
    """Decode Ethernet, IPv4 and UDP in one go, checking both checksums. Fragments are refused: a
    responder cannot answer part of a datagram. Raises only DecodeError."""
    ethertype, offset = payload_offset(frame)
    if ethertype != EtherType.IPV4:
        raise DecodeError(f"EtherType 0x{ethertype:04x} is not IPv4")
    packet = IPv4Packet.decode(frame[offset:])
    if packet.protocol != IpProto.UDP:
        raise DecodeError(f"IP protocol {packet.protocol} is not UDP")
    if packet.is_fragment:
        raise DecodeError("fragment of a UDP datagram")
    udp = UdpDatagram.decode(packet.payload, packet.src, packet.dst)
    return UdpFrame(
        frame[6:12], frame[0:6], packet.src, packet.dst, udp.src_port, udp.dst_port, udp.payload, packet.ttl
    )


def udp_frame(
    src_mac: bytes,
    dst_mac: bytes,
    src_ip: IPv4Address,
    dst_ip: IPv4Address,
    *,
    src_port: int,
    dst_port: int,
    payload: bytes,
    ttl: int = DEFAULT_TTL,
) -> bytes:
    """Build an Ethernet frame carrying one UDP datagram, checksums filled in."""
    datagram = UdpDatagram(src_port, dst_port, payload).encode(src_ip, dst_ip)
    packet = IPv4Packet(src_ip, dst_ip, IpProto.UDP, datagram, ttl=ttl).encode()
    return build_frame(dst_mac, src_mac, EtherType.IPV4, packet)


def udp_ports(frame: bytes) -> tuple[int, int] | None:
    """(source port, destination port) of an unfragmented IPv4/UDP frame, else None. Decodes nothing
    and verifies nothing: the node uses it to route a frame to the DHCP (67) or DNS (53) responder."""
    try:
        ethertype, offset = payload_offset(frame)
    except DecodeError:
        return None
    if ethertype != EtherType.IPV4 or len(frame) < offset + 20 or frame[offset + 9] != 17:
        return None
    if (frame[offset + 6] & 0x3F) or frame[offset + 7]:  # MF flag or a fragment offset
        return None
    start = offset + (frame[offset] & 0x0F) * 4
    if len(frame) < start + 4:
        return None
    ports: tuple[int, int] = _PORTS.unpack_from(frame, start)
    return ports
