"""Pure. Coalescing in-order TCP segments into one GSO frame for a TAP with offloads (the receiving
side of ``vnproto.segment``).

Theory of operation. A peer that had to cut a 64 KiB TCP super-frame into 1448-byte segments for a
1500-byte underlay sends ~44 datagrams; writing each to the TAP costs a system call and a trip through
the kernel's stack. :func:`coalesce` takes the virtio frames of one receive batch, in arrival order,
and merges every run of consecutive frames that the kernel's own GRO would merge into one frame with
a virtio header "TCP GSO, ``gso_size`` = the run's segment size, NEEDS_CSUM": one write instead of
~44. The rules (those of Linux's ``tcp_gro_receive``):

- same Ethernet header, same IP header except length, identification and checksum (IPv4: no options
  that differ, no fragments; IPv6: no extension headers), same ports, acknowledgement number, window,
  urgent pointer and TCP options (timestamps included), same flags except PSH/FIN on the last and
  CWR on the first only; ACK set, no SYN/RST/URG;
- each segment starts where the previous ended (sequence numbers), has payload, and every segment
  but the last carries exactly the run's segment size (a frame that is itself a GSO piece of that
  segment size counts as that many segments); a short segment, PSH or FIN ends the run;
- the merged IP packet stays within ``max_ip`` bytes (65535 at most: the IP length fields).

A frame is a candidate when its virtio header is all zero (checksum complete) or NEEDS_CSUM on the TCP
checksum, possibly TCP GSO. The merged frame's checksum is left partial (the pseudo-header sum in the
field): the kernel does not verify it on local delivery and computes it if it forwards the frame. The
segments' own checksums are not verified here: they came out of an authenticated overlay link, sealed
by the peer that computed them. Anything else - other protocols, frames that do not merge - passes
through unchanged and in order. Merging only neighbours in the batch keeps the order of everything.

Never raises on input: a frame that does not parse is not a candidate and passes through, for the
TAP (and the kernel's own checks) to judge.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from .errors import DecodeError
from .segment import (
    PROTO_TCP,
    TCP_ACK,
    TCP_CWR,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    TCP_URG,
    Bytes,
    Layout,
    address_sum,
    ip_checksum,
    layout,
    partial_field,
)
from .virtio import GSO_ECN, VNET_HDR, VNET_HDR_LEN, GsoType, VnetFlag

MAX_IP = 0xFFFF
_CANDIDATE_TYPES = frozenset({int(GsoType.NONE), int(GsoType.TCPV4), int(GsoType.TCPV6)})
_NOT_ECN = ~GSO_ECN
_TCPV4 = int(GsoType.TCPV4)
_NONE = int(GsoType.NONE)
_SEQ = struct.Struct("!I").unpack_from
_NEEDS_CSUM = int(VnetFlag.NEEDS_CSUM)
_BAD_FLAGS = TCP_SYN | TCP_RST | TCP_URG
_END_FLAGS = TCP_PSH | TCP_FIN
_FREE_FLAGS = TCP_PSH | TCP_FIN | TCP_CWR


class _Seg:
    """A candidate segment: its buffer, header layout and the numbers the merge rules need."""

    __slots__ = ("buf", "flags", "gso_size", "lay", "length", "seq")

    def __init__(self, buf: Bytes, lay: Layout, gso_size: int) -> None:
        self.buf = buf
        self.lay = lay
        self.gso_size = gso_size
        l4 = lay.l4
        self.seq = _SEQ(buf, l4 + 4)[0]
        self.flags = buf[l4 + 13]
        self.length = lay.end - lay.payload


def _candidate(buf: Bytes) -> _Seg | None:
    if len(buf) < VNET_HDR_LEN + 54:
        return None
    flags, gso_type, _hdr_len, gso_size, start, offset = VNET_HDR.unpack_from(buf)
    base = gso_type & _NOT_ECN
    if flags & ~_NEEDS_CSUM or base not in _CANDIDATE_TYPES:
        return None
    try:
        lay = layout(buf)
    except DecodeError:
        return None
    if lay.proto != PROTO_TCP or lay.end == lay.payload:
        return None
    if flags and (start != lay.l4 - VNET_HDR_LEN or offset != 16):
        return None
    if base and (gso_size == 0 or (base == _TCPV4) != lay.v4):
        return None
    tcp_flags = buf[lay.l4 + 13]
    if tcp_flags & _BAD_FLAGS or not tcp_flags & TCP_ACK:
        return None
    return _Seg(buf, lay, gso_size if base else 0)


def _same_flow(a: _Seg, b: _Seg) -> bool:
    """b's headers equal a's where GRO requires it (both already parsed as TCP)."""
    la, lb = a.lay, b.lay
    if la.l3 != lb.l3 or la.l4 != lb.l4 or la.payload != lb.payload:
        return False
    x, y = a.buf, b.buf
    l3, l4, data = la.l3, la.l4, la.payload
    if la.v4:
        # Ethernet, version/IHL/TOS | flags/fragment, TTL, protocol | addresses, options, ports
        same_ip = (
            x[VNET_HDR_LEN : l3 + 2] == y[VNET_HDR_LEN : l3 + 2]
            and x[l3 + 6 : l3 + 10] == y[l3 + 6 : l3 + 10]
        )
        same_ip = same_ip and x[l3 + 12 : l4 + 4] == y[l3 + 12 : l4 + 4]
    else:
        # Ethernet, version/class/flow | next header, hop limit, addresses, ports
        same_ip = (
            x[VNET_HDR_LEN : l3 + 4] == y[VNET_HDR_LEN : l3 + 4] and x[l3 + 6 : l4 + 4] == y[l3 + 6 : l4 + 4]
        )
    return (
        same_ip
        # acknowledgement, data offset | window | urgent pointer, options
        and x[l4 + 8 : l4 + 13] == y[l4 + 8 : l4 + 13]
        and x[l4 + 14 : l4 + 16] == y[l4 + 14 : l4 + 16]
        and x[l4 + 18 : data] == y[l4 + 18 : data]
        and (a.flags & ~_FREE_FLAGS) == (b.flags & ~_FREE_FLAGS)
    )


def coalesce(vframes: Sequence[Bytes], max_ip: int = MAX_IP) -> list[Bytes]:
    """The virtio frames of ``vframes`` with every mergeable run of TCP segments replaced by one GSO
    frame (see the module's docstring); everything else unchanged and in order."""
    if not 0 < max_ip <= MAX_IP:
        raise ValueError(f"max_ip {max_ip} out of range")
    out: list[Bytes] = []
    i, n = 0, len(vframes)
    while i < n:
        buf = vframes[i]
        i += 1
        first = _candidate(buf)
        if first is None:
            out.append(buf)
            continue
        size = first.length  # payload bytes in the run
        seg_size = first.gso_size or size  # the run's segment size
        if size % seg_size or first.flags & _END_FLAGS or i == n:
            out.append(buf)  # a run of one
            continue
        lay = first.lay
        run: list[tuple[Bytes, int]] = [(buf, lay.end)]
        room = max_ip - (lay.payload - lay.l3)
        if lay.v4 and lay.l3 == _PLAIN_L3 and buf[_PLAIN_L3] == 0x45:
            size, i = _grow_plain(vframes, i, first, size, seg_size, room, run)
        else:
            size, i = _grow(vframes, i, first, size, seg_size, room, run)
        out.append(_merge(first, run, size, seg_size) if len(run) > 1 else buf)
    return out


_PLAIN_L3 = VNET_HDR_LEN + 14
"""Where the IPv4 header of an untagged frame starts: the common case, checked without parsing."""


def _grow_plain(
    vframes: Sequence[Bytes],
    i: int,
    first: _Seg,
    size: int,
    seg_size: int,
    room: int,
    run: list[tuple[Bytes, int]],
) -> tuple[int, int]:
    """Extend the run of ``first`` (untagged IPv4 without options) with the frames from ``i`` on:
    the rules of :func:`_candidate` and :func:`_same_flow` checked as one masked comparison with the
    first frame's header bytes (equal ones imply the same layout, only the IP length may differ) and
    a few field checks. Returns the run's payload size and the index of the first frame not taken."""
    x = first.buf
    l4, data = first.lay.l4, first.lay.payload
    # The header bytes after the virtio header as one integer, with what may differ between the
    # segments of a run masked out: IP length, identification and checksum, TCP sequence number,
    # the flags PSH, FIN and CWR (CWR is refused on its own below), TCP checksum.
    mask = _plain_mask(l4, data)
    key = int.from_bytes(x[VNET_HDR_LEN:data], "big") & mask
    seq = first.seq
    headers: dict[bytes, int] = {}  # virtio headers seen: the gso_size they give (-1: no candidate)
    n = len(vframes)
    while i < n:
        y = vframes[i]
        vh = bytes(y[:VNET_HDR_LEN])
        gso = headers.get(vh)
        if gso is None:
            gso = headers[vh] = _plain_header_gso(vh, l4)
        if gso < 0 or len(y) < data:
            break
        end = _PLAIN_L3 + ((y[26] << 8) | y[27])
        length = end - data
        flags = y[l4 + 13]
        if (
            length <= 0
            or end > len(y)
            or (y[l4 + 4] << 24 | y[l4 + 5] << 16 | y[l4 + 6] << 8 | y[l4 + 7]) != (seq + size) & 0xFFFFFFFF
            or flags & TCP_CWR
            or (gso != seg_size if gso else length > seg_size)
            or size + length > room
            or int.from_bytes(y[VNET_HDR_LEN:data], "big") & mask != key
        ):
            break
        run.append((y, end))
        size += length
        i += 1
        if length % seg_size or flags & _END_FLAGS:
            break
    return size, i


_MASKS: dict[tuple[int, int], int] = {}


def _plain_mask(l4: int, data: int) -> int:
    """The mask of :func:`_grow_plain` for headers from the virtio header's end to ``data``."""
    mask = _MASKS.get((l4, data))
    if mask is None:
        keep = bytearray(b"\xff" * (data - VNET_HDR_LEN))
        l3 = _PLAIN_L3 - VNET_HDR_LEN
        t = l4 - VNET_HDR_LEN
        for at, width in ((l3 + 2, 4), (l3 + 10, 2), (t + 4, 4), (t + 16, 2)):
            keep[at : at + width] = bytes(width)
        keep[t + 13] = 0xFF & ~_FREE_FLAGS
        mask = _MASKS[(l4, data)] = int.from_bytes(keep, "big")
    return mask


def _plain_header_gso(vh: bytes, l4: int) -> int:
    """For a virtio header on an untagged IPv4 TCP frame whose transport header is at ``l4``: the
    segment size it declares (0: not GSO), or -1 when :func:`_candidate` would refuse it."""
    flags, gso_type, _hdr_len, gso_size, start, offset = VNET_HDR.unpack(vh)
    base = gso_type & _NOT_ECN
    if flags & ~_NEEDS_CSUM or base not in (_NONE, _TCPV4):
        return -1
    if flags and (start != l4 - VNET_HDR_LEN or offset != 16):
        return -1
    if base and gso_size == 0:
        return -1
    return gso_size if base else 0


def _grow(
    vframes: Sequence[Bytes],
    i: int,
    first: _Seg,
    size: int,
    seg_size: int,
    room: int,
    run: list[tuple[Bytes, int]],
) -> tuple[int, int]:
    """:func:`_grow_plain` for any other layout (VLAN tags, IPv4 options, IPv6): each frame parsed."""
    n = len(vframes)
    while i < n:
        seg = _candidate(vframes[i])
        if (
            seg is None
            or seg.seq != (first.seq + size) & 0xFFFFFFFF
            or seg.flags & TCP_CWR
            or not (seg.gso_size == seg_size if seg.gso_size else seg.length <= seg_size)
            or size + seg.length > room
            or not _same_flow(first, seg)
        ):
            break
        run.append((seg.buf, seg.lay.end))
        size += seg.length
        i += 1
        if seg.length % seg_size or seg.flags & _END_FLAGS:
            break
    return size, i


def _merge(first: _Seg, run: list[tuple[Bytes, int]], size: int, seg_size: int) -> Bytes:
    """One frame of the run's segments: the first's headers, every payload in turn (one copy)."""
    lay = first.lay
    l3, l4, data = lay.l3, lay.l4, lay.payload
    parts: list[Bytes] = [memoryview(first.buf)[:data]]
    parts += [memoryview(buf)[data:end] for buf, end in run]
    out = bytearray().join(parts)
    l4_len = data - l4 + size
    if lay.v4:
        out[l3 + 2 : l3 + 4] = (l4 - l3 + l4_len).to_bytes(2, "big")
        ip_checksum(out, l3)
        gso_type = int(GsoType.TCPV4)
    else:
        out[l3 + 4 : l3 + 6] = l4_len.to_bytes(2, "big")
        gso_type = int(GsoType.TCPV6)
    last_flags = run[-1][0][l4 + 13]
    out[l4 + 13] = (first.flags & ~_END_FLAGS) | (last_flags & _END_FLAGS)
    if first.flags & TCP_CWR:
        gso_type |= GSO_ECN
    pseudo = partial_field(address_sum(out, lay) + PROTO_TCP + l4_len)
    out[l4 + 16 : l4 + 18] = pseudo.to_bytes(2, "big")
    VNET_HDR.pack_into(out, 0, _NEEDS_CSUM, gso_type, data - VNET_HDR_LEN, seg_size, l4 - VNET_HDR_LEN, 16)
    return out
