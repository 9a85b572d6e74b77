"""Access to the golden virtio frames in tests/data/golden/vnet (see the README there)."""

from __future__ import annotations

import struct
from pathlib import Path

VNET = Path(__file__).resolve().parent.parent / "data" / "golden" / "vnet"
CAPTURES = ("tcp4", "tcp6", "udp4", "udp6")
LINKTYPE_USER0 = 147


def vframes(name: str) -> list[bytes]:
    """The records of ``<name>.pcap``: virtio header + Ethernet frame each."""
    data = (VNET / f"{name}.pcap").read_bytes()
    magic, _major, _minor, _zone, _sig, _snap, linktype = struct.unpack_from("<IHHiIII", data)
    assert magic == 0xA1B2C3D4 and linktype == LINKTYPE_USER0, f"{name}.pcap is not a virtio capture"
    out, at = [], 24
    while at < len(data):
        _s, _us, captured, _orig = struct.unpack_from("<IIII", data, at)
        at += 16
        out.append(data[at : at + captured])
        at += captured
    return out


def gso_vframes(name: str) -> list[bytes]:
    """The records that are GSO frames (non-zero GSO type)."""
    return [f for f in vframes(name) if f[1]]
