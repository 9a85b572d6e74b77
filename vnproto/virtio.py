"""Pure. The virtio-net header (``struct virtio_net_hdr``, 10 bytes) that prefixes every frame of a TAP
device opened with ``IFF_VNET_HDR``.

Why it matters: with the header on and offloads enabled (``TUNSETOFFLOAD``), the kernel hands a TAP
reader whole TCP "super-frames" of up to 64 KiB instead of MSS-sized segments, and leaves their
checksum to be filled in ("partial checksum"); a writer may hand such frames back. One read, one
AEAD call and one write then move ~44 segments: the difference between ~0.9 and ~7 Gbit/s measured
on this kind of machine (see ``docs/dataplane.md``).

Layout (virtio 1.x §5.1.6, ``include/uapi/linux/virtio_net.h``; integers little-endian, which the TAP
is told to use with ``TUNSETVNETLE``, so the codec does not depend on the host's byte order)::

    flags u8 | gso_type u8 | hdr_len u16 | gso_size u16 | csum_start u16 | csum_offset u16

- ``flags``: NEEDS_CSUM (the checksum at ``csum_start + csum_offset`` still has to be computed over
  the bytes from ``csum_start`` to the end, and that field holds the pseudo-header sum), DATA_VALID
  (the checksum was verified, only on frames the kernel hands out), RSC_INFO (never from a TAP).
- ``gso_type``: NONE, TCPV4, UDP (UFO, IP fragmentation: never enabled here), TCPV6, UDP_L4 (USO),
  optionally or-ed with ECN (the segments after the first of an ECN-capable flow carry CWR clear).
- ``hdr_len``: bytes of Ethernet, IP and TCP/UDP headers (a hint; the kernel recomputes it).
- ``gso_size``: payload bytes per segment (the MSS) when ``gso_type`` is not NONE.
- ``csum_start`` / ``csum_offset``: where the checksummed region starts (from the Ethernet header) and
  where in it the checksum field is (16 for TCP, 6 for UDP).

:meth:`VirtioNetHdr.decode` checks every field against the frame it describes and raises only
:class:`DecodeError`: a header that arrives from a peer is handed to our kernel only once it makes
sense. :func:`vnet_fields` is the allocation-free parse for the hot path.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from .errors import DecodeError

VNET_HDR_LEN = 10
"""``struct virtio_net_hdr`` without ``num_buffers`` (which only mergeable-buffer virtio devices use;
a TAP's header size is set to this with ``TUNSETVNETHDRSZ``)."""

VNET_HDR = struct.Struct("<BBHHHH")
"""The header's six fields, little-endian."""

NO_OFFLOAD = bytes(VNET_HDR_LEN)
"""The header of a frame that needs nothing done: no segmentation, checksums complete."""

ETHERNET_HEADER_LEN = 14
MIN_FRAME_LEN = ETHERNET_HEADER_LEN
"""A TAP refuses anything shorter than an Ethernet header."""
MAX_FRAME_LEN = 65535 + ETHERNET_HEADER_LEN + 8
"""The largest frame a TAP hands over: an IP packet of 65535 bytes with an Ethernet header and up to
two VLAN tags. Anything longer cannot be a frame of ours."""


class VnetFlag(IntFlag):
    NEEDS_CSUM = 1
    DATA_VALID = 2
    RSC_INFO = 4


class GsoType(IntEnum):
    NONE = 0
    TCPV4 = 1
    UDP = 3
    TCPV6 = 4
    UDP_L4 = 5


GSO_ECN = 0x80
"""Or-ed into ``gso_type``: the TCP flow is ECN-capable, so CWR goes on the first segment only."""

_KNOWN_FLAGS = int(VnetFlag.NEEDS_CSUM | VnetFlag.DATA_VALID | VnetFlag.RSC_INFO)
"""A plain int: ``~`` of an IntFlag keeps only the defined bits, which would hide unknown ones."""
_GSO_TYPES = frozenset(int(t) for t in GsoType)
CSUM_OFFSET_TCP = 16
CSUM_OFFSET_UDP = 6


@dataclass(frozen=True, slots=True)
class VirtioNetHdr:
    """One virtio-net header. Build with keywords; :meth:`encode` checks ranges and raises
    ``ValueError`` on misuse."""

    flags: int = 0
    gso_type: int = GsoType.NONE
    """One of :class:`GsoType`, possibly or-ed with :data:`GSO_ECN`."""
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @property
    def needs_csum(self) -> bool:
        return bool(self.flags & VnetFlag.NEEDS_CSUM)

    @property
    def data_valid(self) -> bool:
        return bool(self.flags & VnetFlag.DATA_VALID)

    @property
    def gso(self) -> GsoType:
        """The GSO type without the ECN bit."""
        return GsoType(self.gso_type & ~GSO_ECN)

    @property
    def ecn(self) -> bool:
        return bool(self.gso_type & GSO_ECN)

    def encode(self) -> bytes:
        for name in ("flags", "gso_type"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ValueError(f"virtio-net header: {name} out of range")
        for name in ("hdr_len", "gso_size", "csum_start", "csum_offset"):
            if not 0 <= getattr(self, name) <= 0xFFFF:
                raise ValueError(f"virtio-net header: {name} out of range")
        return VNET_HDR.pack(
            self.flags, self.gso_type, self.hdr_len, self.gso_size, self.csum_start, self.csum_offset
        )

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview, frame_len: int | None = None) -> VirtioNetHdr:
        """The header at the start of ``data``. With ``frame_len`` (the length of the Ethernet frame
        that follows) it is also checked against the frame: the checksum field lies inside it, and a
        GSO frame has a segment size and a header that fits. Raises only :class:`DecodeError`."""
        if len(data) < VNET_HDR_LEN:
            raise DecodeError(f"virtio-net header: {len(data)} bytes, need {VNET_HDR_LEN}")
        hdr = cls(*VNET_HDR.unpack_from(data))
        problem = hdr.problem(frame_len)
        if problem:
            raise DecodeError(f"virtio-net header: {problem}")
        return hdr

    def problem(self, frame_len: int | None = None) -> str | None:
        """Why this header cannot describe a frame of ``frame_len`` bytes (None when it can). The
        checks are those the kernel makes before accepting a frame (``virtio_net_hdr_to_skb``)."""
        return header_problem(
            self.flags,
            self.gso_type,
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
            frame_len,
        )


def header_problem(
    flags: int,
    gso_type: int,
    hdr_len: int,
    gso_size: int,
    csum_start: int,
    csum_offset: int,
    frame_len: int | None = None,
) -> str | None:
    """:meth:`VirtioNetHdr.problem` on the raw fields (what :func:`vnet_fields` returns)."""
    if flags & ~_KNOWN_FLAGS:
        return f"unknown flags {flags:#04x}"
    if flags & VnetFlag.RSC_INFO:
        return "RSC_INFO is never valid on a TAP"
    base = gso_type & ~GSO_ECN
    if base not in _GSO_TYPES:
        return f"unknown GSO type {gso_type:#04x}"
    if base == GsoType.UDP:
        return "UDP fragmentation offload (UFO) is not supported"
    if base == GsoType.NONE:
        if gso_type & GSO_ECN:
            return "ECN without GSO"
    else:
        if gso_size == 0:
            return "GSO frame with gso_size 0"
        if not flags & VnetFlag.NEEDS_CSUM:
            return "GSO frame without NEEDS_CSUM"
    if flags & VnetFlag.NEEDS_CSUM:
        if csum_start < ETHERNET_HEADER_LEN:
            return f"csum_start {csum_start} inside the Ethernet header"
        if base in (GsoType.TCPV4, GsoType.TCPV6) and csum_offset != CSUM_OFFSET_TCP:
            return f"TCP GSO with csum_offset {csum_offset}"
        if base == GsoType.UDP_L4 and csum_offset != CSUM_OFFSET_UDP:
            return f"UDP GSO with csum_offset {csum_offset}"
        if frame_len is not None and csum_start + csum_offset + 2 > frame_len:
            return f"checksum at {csum_start}+{csum_offset} beyond a frame of {frame_len} bytes"
    if frame_len is not None and not MIN_FRAME_LEN <= frame_len <= MAX_FRAME_LEN:
        return f"frame of {frame_len} bytes"
    return None


def vnet_fields(buf: bytes | bytearray | memoryview) -> tuple[int, int, int, int, int, int]:
    """``(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)`` of the header at the start of
    ``buf``, unchecked: for frames our own kernel handed over. ``buf`` must hold at least 10 bytes
    (``struct.error`` otherwise: a bug of the caller, which sized its read)."""
    return VNET_HDR.unpack_from(buf)
