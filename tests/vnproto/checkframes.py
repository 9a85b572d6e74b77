"""Test support: an independent reading of TCP/UDP virtio frames and of their checksums (struct and
a plain loop over 16-bit words, nothing from vnproto.segment), and a builder of GSO frames the way
the kernel makes them, for property tests."""

from __future__ import annotations

import struct
from dataclasses import dataclass

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD


def ref_sum(data: bytes) -> int:
    """RFC 1071 one's-complement sum, the textbook way."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@dataclass
class Parsed:
    vnet: tuple[int, ...]
    l3: int
    l4: int
    data: int
    v4: bool
    proto: int
    frame: bytes

    @property
    def payload(self) -> bytes:
        return self.frame[self.data :]

    @property
    def seq(self) -> int:
        return int(struct.unpack_from("!I", self.frame, self.l4 + 4)[0])

    @property
    def tcp_flags(self) -> int:
        return self.frame[self.l4 + 13]

    @property
    def ip_id(self) -> int:
        return int(struct.unpack_from("!H", self.frame, self.l3 + 4)[0])

    def pseudo(self) -> bytes:
        length = len(self.frame) - self.l4
        if self.v4:
            return self.frame[self.l3 + 12 : self.l3 + 20] + struct.pack("!BBH", 0, self.proto, length)
        return self.frame[self.l3 + 8 : self.l3 + 40] + struct.pack("!IxxxB", length, self.proto)

    def l4_checksum_ok(self) -> bool:
        """The transport checksum verifies (a complete checksum)."""
        return ref_sum(self.pseudo() + self.frame[self.l4 :]) == 0xFFFF

    def l4_partial_ok(self) -> bool:
        """The transport checksum field holds the pseudo-header sum (a partial checksum)."""
        at = self.l4 + (16 if self.proto == 6 else 6)
        field = int(struct.unpack_from("!H", self.frame, at)[0])
        # Never 0: the kernel refuses a zero UDP checksum over IPv6 even when the checksum is partial.
        return field != 0 and field % 0xFFFF == ref_sum(self.pseudo()) % 0xFFFF

    def ip_ok(self) -> bool:
        if not self.v4:
            return int(struct.unpack_from("!H", self.frame, self.l3 + 4)[0]) == len(self.frame) - self.l4
        ihl = (self.frame[self.l3] & 15) * 4
        total = int(struct.unpack_from("!H", self.frame, self.l3 + 2)[0])
        return ref_sum(self.frame[self.l3 : self.l3 + ihl]) == 0xFFFF and total == len(self.frame) - self.l3


def parse(vframe: bytes | bytearray | memoryview) -> Parsed:
    vf = bytes(vframe)
    vnet = struct.unpack_from("<BBHHHH", vf)
    frame = vf[10:]
    at = 12
    while struct.unpack_from("!H", frame, at)[0] in (0x8100, 0x88A8):
        at += 4
    ethertype = struct.unpack_from("!H", frame, at)[0]
    l3 = at + 2
    if ethertype == ETH_IPV4:
        l4 = l3 + (frame[l3] & 15) * 4
        proto = frame[l3 + 9]
    else:
        assert ethertype == ETH_IPV6
        l4 = l3 + 40
        proto = frame[l3 + 6]
    data = l4 + ((frame[l4 + 12] >> 4) * 4 if proto == 6 else 8)
    return Parsed(vnet, l3, l4, data, ethertype == ETH_IPV4, proto, frame)


def build_gso(
    payload: bytes,
    mss: int,
    *,
    v6: bool = False,
    udp: bool = False,
    vlans: int = 0,
    options: bytes = b"",
    flags: int = 0x18,
    seq: int = 1000,
    ip_id: int = 7,
    ecn: bool = False,
) -> bytes:
    """A GSO virtio frame as an offloading TAP hands it over: all headers of the whole, NEEDS_CSUM with
    the pseudo-header sum (of the whole transport length) in the checksum field."""
    eth = bytes.fromhex("020000009902020000009901") + b"\x81\x00\x00\x05" * vlans
    eth += struct.pack("!H", ETH_IPV6 if v6 else ETH_IPV4)
    proto = 17 if udp else 6
    if udp:
        l4 = struct.pack("!HHHH", 4000, 5000, 8 + len(payload), 0)
    else:
        assert len(options) % 4 == 0
        doff = (20 + len(options)) // 4
        l4 = struct.pack("!HHIIBBHHH", 40000, 5999, seq, 99, doff << 4, flags, 502, 0, 0) + options
    l4_len = len(l4) + len(payload)
    src, dst = (
        (bytes(range(16)), bytes(range(16, 32))) if v6 else (bytes([10, 99, 0, 1]), bytes([10, 99, 0, 2]))
    )
    if v6:
        ip = struct.pack("!IHBB", 6 << 28, l4_len, proto, 64) + src + dst
        pseudo = src + dst + struct.pack("!IxxxB", l4_len, proto)
    else:
        ip = bytearray(
            struct.pack("!BBHHHBBH", 0x45, 0, 20 + l4_len, ip_id, 0x4000, 64, proto, 0) + src + dst
        )
        struct.pack_into("!H", ip, 10, ~ref_sum(bytes(ip)) & 0xFFFF)
        pseudo = src + dst + struct.pack("!BBH", 0, proto, l4_len)
    l4b = bytearray(l4)
    struct.pack_into("!H", l4b, 6 if udp else 16, ref_sum(pseudo))
    headers = len(eth) + len(ip) + len(l4)
    gso_type = (5 if udp else (4 if v6 else 1)) | (0x80 if ecn else 0)
    vnet = struct.pack("<BBHHHH", 1, gso_type, headers, mss, len(eth) + len(ip), 6 if udp else 16)
    return vnet + eth + bytes(ip) + bytes(l4b) + payload
