"""A minimal reader of classic pcap files (the format tcpdump -w writes), enough for golden frames.

The format is a 24-byte global header (magic number, version, snap length, link type) followed by
records of a 16-byte header (seconds, sub-seconds, captured length, original length) and the bytes.
The magic number tells the byte order and whether sub-seconds are micro- or nanoseconds."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

LINKTYPE_ETHERNET = 1
_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}


@dataclass(frozen=True)
class Record:
    time: float
    frame: bytes


def read_pcap(path: Path) -> list[Record]:
    data = path.read_bytes()
    if len(data) < 24 or data[:4] not in _MAGICS:
        raise ValueError(f"{path} is not a pcap file")
    order, unit = _MAGICS[data[:4]]
    linktype = struct.unpack_from(order + "I", data, 20)[0]
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: link type {linktype}, expected Ethernet")
    records: list[Record] = []
    offset = 24
    while offset < len(data):
        if offset + 16 > len(data):
            raise ValueError(f"{path}: truncated record header at {offset}")
        seconds, fraction, captured, _original = struct.unpack_from(order + "IIII", data, offset)
        offset += 16
        if offset + captured > len(data):
            raise ValueError(f"{path}: truncated record at {offset}")
        records.append(Record(seconds + fraction * unit, data[offset : offset + captured]))
        offset += captured
    return records
