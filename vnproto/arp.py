"""Pure. ARP for IPv4 over Ethernet (RFC 826), and the kinds of request RFC 5227 gives names to.

Only hardware type 1 (Ethernet) with protocol 0x0800 (IPv4) is decoded; anything else is a
:class:`DecodeError`, because nothing else can appear on the virtual Ethernet and nothing else could be
answered. Trailing bytes (Ethernet padding to 60 bytes) are ignored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address

from .errors import DecodeError

ARP_LEN = 28
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_PREFIX = b"\x00\x01\x08\x00\x06\x04"
"""htype 1, ptype 0x0800, hlen 6, plen 4: the only combination this module accepts."""
UNSPECIFIED = IPv4Address(0)


class ArpOp(IntEnum):
    REQUEST = 1
    REPLY = 2


@dataclass(frozen=True, slots=True)
class ArpPacket:
    op: int
    sender_mac: bytes
    sender_ip: IPv4Address
    target_mac: bytes
    target_ip: IPv4Address

    @property
    def is_probe(self) -> bool:
        """An address probe (RFC 5227 §2.1.1): the sender has no address yet and asks whether the
        target address is taken. It must never be answered on another's behalf, or the prober would
        believe its new address is in use."""
        return self.op == ArpOp.REQUEST and self.sender_ip == UNSPECIFIED

    @property
    def is_gratuitous(self) -> bool:
        """An announcement (RFC 5227 §2.3): a host tells everyone the address it has, as request or
        reply with sender and target address equal. Hosts send one when they (re)appear, e.g. after
        moving to another router."""
        return self.sender_ip == self.target_ip and self.sender_ip != UNSPECIFIED

    def encode(self) -> bytes:
        if len(self.sender_mac) != 6 or len(self.target_mac) != 6:
            raise ValueError("MAC addresses are 6 bytes")
        return _ARP.pack(
            1,
            0x0800,
            6,
            4,
            self.op,
            self.sender_mac,
            self.sender_ip.packed,
            self.target_mac,
            self.target_ip.packed,
        )

    @classmethod
    def decode(cls, data: bytes) -> ArpPacket:
        if len(data) < ARP_LEN:
            raise DecodeError(f"ARP packet of {len(data)} bytes, need {ARP_LEN}")
        if data[:6] != _PREFIX:
            raise DecodeError("ARP packet is not IPv4 over Ethernet")
        _, _, _, _, op, smac, sip, tmac, tip = _ARP.unpack_from(data)
        if op not in (ArpOp.REQUEST, ArpOp.REPLY):
            raise DecodeError(f"ARP operation {op}")
        return cls(op, smac, IPv4Address(sip), tmac, IPv4Address(tip))
