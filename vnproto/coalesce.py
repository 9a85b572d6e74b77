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
        self.seq = int.from_bytes(buf[l4 + 4 : l4 + 8], "big")
        self.flags = buf[l4 + 13]
        self.length = lay.end - lay.payload


def _candidate(buf: Bytes) -> _Seg | None:
    if len(buf) < VNET_HDR_LEN + 54:
        return None
    flags, gso_type, _hdr_len, gso_size, start, offset = VNET_HDR.unpack_from(buf)
    base = gso_type & ~GSO_ECN
    if flags & ~_NEEDS_CSUM or base not in (GsoType.NONE, GsoType.TCPV4, GsoType.TCPV6):
        return None
    try:
        lay = layout(buf)
    except DecodeError:
        return None
    if lay.proto != PROTO_TCP or lay.end == lay.payload:
        return None
    if flags and (start != lay.l4 - VNET_HDR_LEN or offset != 16):
        return None
    if base != GsoType.NONE and (gso_size == 0 or (base == GsoType.TCPV4) != lay.v4):
        return None
    tcp_flags = buf[lay.l4 + 13]
    if tcp_flags & _BAD_FLAGS or not tcp_flags & TCP_ACK:
        return None
    return _Seg(buf, lay, gso_size if base != GsoType.NONE else 0)


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
    run: list[_Seg] = []
    size = 0  # payload bytes in the run
    seg_size = 0  # the run's segment size
    open_ = False  # whether the run may grow
    for buf in vframes:
        seg = _candidate(buf)
        if seg is not None and run and open_:
            first = run[0]
            if (
                seg.seq == (first.seq + size) & 0xFFFFFFFF
                and not seg.flags & TCP_CWR
                and (seg.gso_size == seg_size if seg.gso_size else seg.length <= seg_size)
                and (first.lay.payload - first.lay.l3 + size + seg.length) <= max_ip
                and _same_flow(first, seg)
            ):
                run.append(seg)
                size += seg.length
                open_ = seg.length % seg_size == 0 and not seg.flags & _END_FLAGS
                continue
        if run:
            out.append(_merge(run, size, seg_size))
            run = []
        if seg is None:
            out.append(buf)
            continue
        run = [seg]
        size = seg.length
        seg_size = seg.gso_size or seg.length
        open_ = size % seg_size == 0 and not seg.flags & _END_FLAGS
    if run:
        out.append(_merge(run, size, seg_size))
    return out


def _merge(run: list[_Seg], size: int, seg_size: int) -> Bytes:
    first = run[0]
    if len(run) == 1:
        return first.buf
    lay = first.lay
    l3, l4, data = lay.l3, lay.l4, lay.payload
    out = bytearray(data + size)
    out[:data] = first.buf[:data]
    pos = data
    for seg in run:
        out[pos : pos + seg.length] = seg.buf[data : data + seg.length]
        pos += seg.length
    l4_len = data - l4 + size
    if lay.v4:
        out[l3 + 2 : l3 + 4] = (l4 - l3 + l4_len).to_bytes(2, "big")
        ip_checksum(out, l3)
        gso_type = int(GsoType.TCPV4)
    else:
        out[l3 + 4 : l3 + 6] = l4_len.to_bytes(2, "big")
        gso_type = int(GsoType.TCPV6)
    last_flags = run[-1].flags
    out[l4 + 13] = (first.flags & ~_END_FLAGS) | (last_flags & _END_FLAGS)
    if first.flags & TCP_CWR:
        gso_type |= GSO_ECN
    pseudo = partial_field(address_sum(out, lay) + PROTO_TCP + l4_len)
    out[l4 + 16 : l4 + 18] = pseudo.to_bytes(2, "big")
    VNET_HDR.pack_into(out, 0, _NEEDS_CSUM, gso_type, data - VNET_HDR_LEN, seg_size, l4 - VNET_HDR_LEN, 16)
    return out
