"""Pure. Splitting GSO frames from an offloading TAP into pieces the underlay can carry, and completing
partial checksums.

Theory of operation. A TAP opened with offloads (``vnproto.virtio``) hands the node "virtio frames":
a 10-byte virtio-net header and an Ethernet frame, often a TCP super-frame of up to 64 KiB whose
header says "cut me into ``gso_size`` segments" and whose TCP checksum is left partial (the field
holds the pseudo-header sum; the rest is to be added over the bytes from ``csum_start``). When the path
to the peer carries such a datagram whole, the node sends it unchanged and the peer's TAP accepts it
as it is. When it does not, :func:`segment` cuts it here, as the kernel's TSO would:

- every piece gets the headers of the original with its own IPv4 total length, IP identification
  (the original's plus the index of the piece's first segment), IPv4 header checksum, TCP sequence
  number (the original's plus the piece's offset in the payload) or UDP length;
- TCP FIN and PSH stay on the last piece only, CWR on the first only;
- the TCP/UDP checksum is either completed (``partial=False``: a plain frame any receiver accepts,
  behind an all-zero virtio header) or left partial (``partial=True``: NEEDS_CSUM, the pseudo-header
  sum of the piece in the field, which costs no pass over the payload; for a peer whose TAP offloads).
- with ``partial=True`` a piece that has room for several segments stays a GSO frame of that many
  (a 9000-byte path carries six 1448-byte segments per datagram); with ``partial=False`` every piece
  is one segment, because a frame with a complete checksum cannot be a GSO frame.

UDP GSO frames (GSO type UDP_L4, from sockets using ``UDP_SEGMENT``) are cut into their datagrams the
same way. A frame that needs no cutting is returned as it came (partial) or with its checksum
completed. A frame larger than ``max_frame`` that is not a GSO frame cannot be cut (the underlay must
never carry IP fragments): it is returned whole and the caller answers with ICMP "fragmentation
needed" or drops it.

The reverse, merging in-order segments back into one frame for the receiving TAP, is
``vnproto.coalesce``. The one's-complement sums use ``int.from_bytes(data) % 0xFFFF`` (2**16 is 1
modulo 0xFFFF, so the residue of the big-endian integer is the sum of its 16-bit words), about 3 us
for a 1448-byte segment here, five times faster than summing an array of words.

Decoding errors in the frame raise :class:`DecodeError` only; a ``max_frame`` too small to carry the
headers raises ``ValueError`` (a bug of the caller).
"""

from __future__ import annotations

import struct

from .errors import DecodeError
from .virtio import (
    GSO_ECN,
    VNET_HDR,
    VNET_HDR_LEN,
    GsoType,
    VnetFlag,
    header_problem,
)

Bytes = bytes | bytearray | memoryview

ETH_LEN = 14
ETH_P_IPV4 = 0x0800
ETH_P_IPV6 = 0x86DD
VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100})
MAX_VLAN_TAGS = 2
"""802.1Q and 802.1ad (Q-in-Q): the most a TAP passes on."""
IPV6_LEN = 40
UDP_LEN = 8
PROTO_TCP = 6
PROTO_UDP = 17
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20
TCP_CWR = 0x80
MAX_IP_LEN = 0xFFFF

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_pack_u16 = _U16.pack_into
_pack_u32 = _U32.pack_into
_pack_vnet = VNET_HDR.pack_into
_NEEDS_CSUM = int(VnetFlag.NEEDS_CSUM)
_TCP_TYPES = (int(GsoType.TCPV4), int(GsoType.TCPV6))
_UDP_L4 = int(GsoType.UDP_L4)


def sum16(data: Bytes) -> int:
    """The one's-complement sum of ``data`` (zero-padded if odd) reduced modulo 0xFFFF: 0 stands for
    both 0 and 0xFFFF, which one's-complement arithmetic treats as the same number."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return value % 0xFFFF


def partial_field(total: int) -> int:
    """The value to leave in a partial checksum field for a pseudo-header sum ``total``: 0xFFFF rather
    than 0, the same number in one's complement, because the kernel refuses a UDP checksum field of 0
    over IPv6 (RFC 8200 §8.1) before it looks at whether the checksum is partial."""
    return total % 0xFFFF or 0xFFFF


def _finish(total: int) -> int:
    """The checksum to store for a one's-complement sum ``total``; never 0 (UDP's "no checksum")."""
    return 0xFFFF - total % 0xFFFF


class Layout:
    """Where the headers of one TCP or UDP frame are (offsets from the start of the virtio frame)."""

    __slots__ = ("end", "l3", "l4", "payload", "proto", "v4")

    def __init__(self, l3: int, l4: int, payload: int, end: int, v4: bool, proto: int) -> None:
        self.l3 = l3
        self.l4 = l4
        self.payload = payload
        self.end = end
        """End of the IP packet (bytes after it, Ethernet padding, are not part of it)."""
        self.v4 = v4
        self.proto = proto


def _plain_ipv4(buf: Bytes, base: int) -> Layout | None:
    """The layout of the common case, untagged IPv4 without options carrying TCP or UDP (what the
    data plane carries), found with a few checks; None for anything else, which :func:`layout`
    parses (and refuses) in full."""
    l3 = base + ETH_LEN
    if len(buf) < l3 + 40 or buf[l3 - 2] != 0x08 or buf[l3 - 1] != 0 or buf[l3] != 0x45:
        return None
    total = (buf[l3 + 2] << 8) | buf[l3 + 3]
    proto, l4, end = buf[l3 + 9], l3 + 20, l3 + total
    if total < 20 or end > len(buf) or ((buf[l3 + 6] << 8) | buf[l3 + 7]) & 0x3FFF:
        return None
    if proto == PROTO_TCP:
        doff = (buf[l4 + 12] >> 4) * 4
        if doff >= 20 and l4 + doff <= end:
            return Layout(l3, l4, l4 + doff, end, True, proto)
    elif proto == PROTO_UDP and l4 + UDP_LEN <= end:
        return Layout(l3, l4, l4 + UDP_LEN, end, True, proto)
    return None


def layout(buf: Bytes, base: int = VNET_HDR_LEN) -> Layout:
    """Parse the Ethernet (up to two VLAN tags), IPv4/IPv6 and TCP/UDP headers of the frame that
    starts at ``base``. Raises :class:`DecodeError` for anything that is not a whole, unfragmented
    TCP or UDP packet without IPv6 extension headers."""
    quick = _plain_ipv4(buf, base)
    if quick is not None:
        return quick
    n = len(buf)
    at = base + 12
    for _ in range(MAX_VLAN_TAGS + 1):
        if at + 2 > n:
            raise DecodeError("segment: truncated Ethernet header")
        ethertype = (buf[at] << 8) | buf[at + 1]
        if ethertype not in VLAN_TPIDS:
            break
        at += 4
    else:
        raise DecodeError("segment: too many VLAN tags")
    l3 = at + 2
    if ethertype == ETH_P_IPV4:
        if l3 + 20 > n:
            raise DecodeError("segment: truncated IPv4 header")
        if buf[l3] >> 4 != 4:
            raise DecodeError("segment: not IPv4")
        ihl = (buf[l3] & 0x0F) * 4
        total = (buf[l3 + 2] << 8) | buf[l3 + 3]
        if ihl < 20 or total < ihl or l3 + total > n:
            raise DecodeError("segment: bad IPv4 lengths")
        if ((buf[l3 + 6] << 8) | buf[l3 + 7]) & 0x3FFF:
            raise DecodeError("segment: an IPv4 fragment")
        proto, l4, end, v4 = buf[l3 + 9], l3 + ihl, l3 + total, True
    elif ethertype == ETH_P_IPV6:
        if l3 + IPV6_LEN > n:
            raise DecodeError("segment: truncated IPv6 header")
        if buf[l3] >> 4 != 6:
            raise DecodeError("segment: not IPv6")
        plen = (buf[l3 + 4] << 8) | buf[l3 + 5]
        if l3 + IPV6_LEN + plen > n:
            raise DecodeError("segment: bad IPv6 payload length")
        proto, l4, end, v4 = buf[l3 + 6], l3 + IPV6_LEN, l3 + IPV6_LEN + plen, False
    else:
        raise DecodeError(f"segment: EtherType {ethertype:#06x} is not IP")
    if proto == PROTO_TCP:
        if l4 + 20 > end:
            raise DecodeError("segment: truncated TCP header")
        doff = (buf[l4 + 12] >> 4) * 4
        if doff < 20 or l4 + doff > end:
            raise DecodeError("segment: bad TCP data offset")
        return Layout(l3, l4, l4 + doff, end, v4, proto)
    if proto == PROTO_UDP:
        if l4 + UDP_LEN > end:
            raise DecodeError("segment: truncated UDP header")
        return Layout(l3, l4, l4 + UDP_LEN, end, v4, proto)
    raise DecodeError(f"segment: IP protocol {proto} is neither TCP nor UDP (or behind extension headers)")


def address_sum(buf: Bytes, lay: Layout) -> int:
    """The pseudo-header's share of the addresses: both of them, summed once per frame."""
    if lay.v4:
        return sum16(buf[lay.l3 + 12 : lay.l3 + 20])
    return sum16(buf[lay.l3 + 8 : lay.l3 + 40])


def ip_checksum(buf: bytearray, l3: int) -> None:
    """Recompute the IPv4 header checksum of the header at ``l3`` in place."""
    ihl = (buf[l3] & 0x0F) * 4
    buf[l3 + 10] = buf[l3 + 11] = 0
    _pack_u16(buf, l3 + 10, _finish(sum16(buf[l3 : l3 + ihl])))


def complete_checksum(vframe: Bytes) -> bytearray:
    """The frame of ``vframe`` (virtio header + Ethernet frame, NEEDS_CSUM, no GSO) with its partial
    checksum completed, behind an all-zero virtio header: what a TAP without offloads accepts after
    the first 10 bytes are cut off. Raises :class:`DecodeError` on a header that does not fit."""
    if len(vframe) < VNET_HDR_LEN:
        raise DecodeError("complete_checksum: no virtio-net header")
    flags, gso_type, _hl, _gs, start, offset = VNET_HDR.unpack_from(vframe)
    out = bytearray(vframe)
    out[:VNET_HDR_LEN] = bytes(VNET_HDR_LEN)
    if not flags & _NEEDS_CSUM:
        return out
    problem = header_problem(flags, gso_type, _hl, _gs, start, offset, len(vframe) - VNET_HDR_LEN)
    if problem or gso_type:
        raise DecodeError(f"complete_checksum: {problem or 'a GSO frame; segment it'}")
    at = VNET_HDR_LEN + start
    total = sum16(memoryview(out)[at:])
    # The field holds the pseudo-header sum, which is part of the sum just taken; store the complement.
    _pack_u16(out, at + offset, _finish(total))
    return out


def segment(vframe: Bytes, max_frame: int = 0, *, partial: bool = False) -> list[Bytes]:
    """Cut the virtio frame ``vframe`` into virtio frames whose Ethernet frames are at most
    ``max_frame`` bytes long (0: cut GSO frames into single segments of ``gso_size``, as a TAP without
    offloads needs them). See the module's docstring for what each piece looks like. Raises
    :class:`DecodeError` on a malformed frame or header."""
    if len(vframe) < VNET_HDR_LEN:
        raise DecodeError("segment: no virtio-net header")
    flags, gso_type, hdr_len, gso_size, start, offset = VNET_HDR.unpack_from(vframe)
    frame_len = len(vframe) - VNET_HDR_LEN
    problem = header_problem(flags, gso_type, hdr_len, gso_size, start, offset, frame_len)
    if problem:
        raise DecodeError(f"segment: {problem}")
    base_type = gso_type & ~GSO_ECN
    if base_type == GsoType.NONE or (max_frame and frame_len <= max_frame and partial):
        if flags & _NEEDS_CSUM and not partial:
            return [complete_checksum(vframe)]
        return [vframe]
    mv = memoryview(vframe)
    lay = layout(mv)
    if base_type in _TCP_TYPES:
        if lay.proto != PROTO_TCP or lay.v4 != (base_type == GsoType.TCPV4):
            raise DecodeError("segment: GSO type does not match the packet")
    elif lay.proto != PROTO_UDP:
        raise DecodeError("segment: UDP GSO type on a packet that is not UDP")
    if lay.l4 - VNET_HDR_LEN != start:
        raise DecodeError("segment: csum_start is not the transport header")
    headers = lay.payload - VNET_HDR_LEN
    if lay.end == lay.payload:
        raise DecodeError("segment: a GSO frame without payload")
    if not max_frame:
        per_piece = gso_size
    else:
        room = max_frame - headers
        if room <= 0:
            raise ValueError(f"segment: max_frame {max_frame} leaves no room past {headers} bytes of headers")
        if room >= gso_size or lay.proto == PROTO_UDP:
            # A UDP datagram is never cut smaller than the sender made it: that would change what
            # the receiving application reads. One that does not fit goes out whole, for the caller.
            per_piece = gso_size * (max(1, room // gso_size) if partial else 1)
        else:
            per_piece = room  # the path is narrower than the sender's MSS: smaller TCP segments
    return _cut(mv, lay, gso_type, gso_size, per_piece, partial)


def _ip_base(mv: memoryview, l3: int, l4: int) -> int:
    """The IPv4 header's sum without length, identification and checksum: each piece adds its own
    length and identification, which spares summing the header once per piece."""
    fixed = bytearray(mv[l3:l4])
    fixed[2:6] = bytes(4)
    fixed[10:12] = bytes(2)
    return sum16(fixed)


class _Headers:
    """What every piece of one cut frame shares, and how to write one piece's header fields."""

    __slots__ = ("asum", "csum", "gso", "ip_base", "ip_id", "lay", "partial", "seq", "tcp_flags", "unit")

    def __init__(self, mv: memoryview, lay: Layout, gso: tuple[int, int], per_piece: int, partial: bool):
        l3, l4 = lay.l3, lay.l4
        tcp = lay.proto == PROTO_TCP
        self.lay = lay
        self.gso = gso
        """The frame's GSO type and size."""
        self.partial = partial
        self.asum = address_sum(mv, lay) + lay.proto
        self.ip_id = (mv[l3 + 4] << 8) | mv[l3 + 5] if lay.v4 else 0
        self.seq = (mv[l4 + 4] << 24) | (mv[l4 + 5] << 16) | (mv[l4 + 6] << 8) | mv[l4 + 7] if tcp else 0
        self.tcp_flags = mv[l4 + 13] if tcp else 0
        self.csum = (l4 + (16 if tcp else 6), l4 - VNET_HDR_LEN, 16 if tcp else 6)
        """Where the checksum field is, and the virtio header's csum_start and csum_offset."""
        self.ip_base = _ip_base(mv, l3, l4) if lay.v4 else 0
        self.unit = min(per_piece, gso[1])
        """Payload per segment: IP identifications count segments, as TSO does."""

    def fill(self, out: bytearray, pos: int, n: int, first: bool, last: bool) -> None:
        """Every header field of the piece of ``n`` payload bytes at ``pos``."""
        lay = self.lay
        l3, l4, data = lay.l3, lay.l4, lay.payload
        l4_len = data - l4 + n
        if lay.v4:
            total, ident = l4 - l3 + l4_len, (self.ip_id + (pos - data) // self.unit) & 0xFFFF
            _pack_u16(out, l3 + 2, total)
            _pack_u16(out, l3 + 4, ident)
            _pack_u16(out, l3 + 10, _finish(self.ip_base + total + ident))
        else:
            _pack_u16(out, l3 + 4, l4_len)
        if lay.proto == PROTO_TCP:
            _pack_u32(out, l4 + 4, (self.seq + pos - data) & 0xFFFFFFFF)
            f = self.tcp_flags
            if not first:
                f &= ~TCP_CWR
            if not last:
                f &= ~(TCP_FIN | TCP_PSH)
            out[l4 + 13] = f
        else:
            _pack_u16(out, l4 + 4, l4_len)
        pseudo = (self.asum + l4_len) % 0xFFFF
        csum_at, csum_start, csum_offset = self.csum
        gso_type, gso_size = self.gso
        if self.partial:
            _pack_u16(out, csum_at, pseudo or 0xFFFF)  # see partial_field
            if n > gso_size:
                headers = data - VNET_HDR_LEN
                _pack_vnet(out, 0, _NEEDS_CSUM, gso_type, headers, gso_size, csum_start, csum_offset)
            else:
                _pack_vnet(out, 0, _NEEDS_CSUM, 0, 0, 0, csum_start, csum_offset)
        else:
            _pack_vnet(out, 0, 0, 0, 0, 0, 0, 0)
            out[csum_at] = out[csum_at + 1] = 0
            _pack_u16(out, csum_at, _finish(pseudo + sum16(memoryview(out)[l4:])))


def _cut(
    mv: memoryview, lay: Layout, gso_type: int, gso_size: int, per_piece: int, partial: bool
) -> list[Bytes]:
    l3, l4, data, end, v4 = lay.l3, lay.l4, lay.payload, lay.end, lay.v4
    tcp = lay.proto == PROTO_TCP
    head = mv[:data]
    h = _Headers(mv, lay, (gso_type, gso_size), per_piece, partial)
    fill, ip_id, seq, unit = h.fill, h.ip_id, h.seq, h.unit
    # With partial checksums the pieces between the first and the last differ only in the IPv4
    # identification and header checksum and the TCP sequence number: their headers are copied from
    # a template filled once, and only those fields are written per piece (sender at M=1500: ~10 %).
    template = bytearray(head) if partial else None
    if template is not None:
        fill(template, data, per_piece, False, False)
    ip_full = h.ip_base + l4 - l3 + data - l4 + per_piece
    pieces: list[Bytes] = []
    pos = data
    while pos < end:
        n = min(per_piece, end - pos)
        if template is not None and pos != data and pos + n < end:
            out = bytearray(template)
            out += mv[pos : pos + n]
            if v4:
                ident = (ip_id + (pos - data) // unit) & 0xFFFF
                _pack_u16(out, l3 + 4, ident)
                _pack_u16(out, l3 + 10, _finish(ip_full + ident))
            if tcp:
                _pack_u32(out, l4 + 4, (seq + pos - data) & 0xFFFFFFFF)
        else:
            out = bytearray(head)  # the headers, then the payload appended: no zero-filled buffer first
            out += mv[pos : pos + n]
            fill(out, pos, n, pos == data, pos + n >= end)
        pieces.append(out)
        pos += n
    return pieces
