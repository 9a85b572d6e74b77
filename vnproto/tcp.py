"""Pure. Just enough TCP to clamp the maximum segment size announced in SYNs.

Two hosts on the virtual network negotiate their MSS from their own interface MTUs. If either sits
behind a router whose path to the overlay has a smaller MTU (router mode: the LAN is 1500, the virtual
network less), and ICMP "fragmentation needed" is filtered somewhere, full-size segments vanish. Clamping
the MSS option of every SYN to what the virtual MTU allows (MTU - 40) avoids that whatever the path
does. The option is rewritten in place and the TCP checksum adjusted incrementally (RFC 1624), so no
other byte of the packet changes.
"""

from __future__ import annotations

from .checksum import checksum_update
from .errors import DecodeError
from .ethernet import EtherType, payload_offset
from .ipv4 import IpProto, check_header

TCP_MIN_HEADER_LEN = 20
FLAG_SYN = 0x02
OPT_END = 0
OPT_NOP = 1
OPT_MSS = 2
IP_TCP_HEADERS = 40
"""IPv4 and TCP headers without options: MSS = MTU - 40 (RFC 879)."""


def mss_for_mtu(mtu: int) -> int:
    return mtu - IP_TCP_HEADERS


def _mss_option_offset(segment: bytes | bytearray) -> int | None:
    """Offset of the 2-byte MSS value inside a TCP SYN segment, or None."""
    if len(segment) < TCP_MIN_HEADER_LEN or not segment[13] & FLAG_SYN:
        return None
    header_len = (segment[12] >> 4) * 4
    if header_len < TCP_MIN_HEADER_LEN or header_len > len(segment):
        return None
    i = TCP_MIN_HEADER_LEN
    while i < header_len:
        kind = segment[i]
        if kind == OPT_END:
            return None
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= header_len:
            return None
        length = segment[i + 1]
        if length < 2 or i + length > header_len:
            return None
        if kind == OPT_MSS:
            return i + 2 if length == 4 else None
        i += length
    return None


def tcp_mss(packet: bytes) -> int | None:
    """The MSS option of an IPv4/TCP SYN packet, or None if it is not one or has no MSS option."""
    try:
        ihl, total = check_header(packet, verify_checksum=False)
    except DecodeError:
        return None
    if packet[9] != IpProto.TCP or int.from_bytes(packet[6:8], "big") & 0x1FFF:
        return None
    segment = packet[ihl:total]
    at = _mss_option_offset(segment)
    return None if at is None else int.from_bytes(segment[at : at + 2], "big")


def clamp_mss(packet: bytes, max_mss: int) -> bytes:
    """``packet`` (an IPv4 packet) with the MSS option of a TCP SYN lowered to ``max_mss`` if it was
    larger. Anything else - not TCP, not a SYN, no MSS option, a non-first fragment, malformed - is
    returned unchanged: the data plane forwards it, and the receiver judges it. Never raises on input."""
    if not 0 < max_mss <= 0xFFFF:
        raise ValueError(f"MSS {max_mss} out of range")
    try:
        ihl, total = check_header(packet, verify_checksum=False)
    except DecodeError:
        return packet
    if packet[9] != IpProto.TCP or int.from_bytes(packet[6:8], "big") & 0x1FFF:
        return packet
    at = _mss_option_offset(packet[ihl:total])
    if at is None:
        return packet
    at += ihl
    old = int.from_bytes(packet[at : at + 2], "big")
    if old <= max_mss:
        return packet
    out = bytearray(packet)
    out[at : at + 2] = max_mss.to_bytes(2, "big")
    checksum_at = ihl + 16
    old_checksum = int.from_bytes(out[checksum_at : checksum_at + 2], "big")
    # The MSS value starts at an even offset within the segment (options are 32-bit aligned by the
    # header, and MSS is two bytes after its kind/length), unless NOPs shifted it by one; the
    # incremental update needs the 16-bit words the change falls in.
    if (at - ihl) % 2 == 0:
        new_checksum = checksum_update(old_checksum, old, max_mss)
    else:
        new_checksum = _update_unaligned(packet, out, at, old_checksum, total)
    out[checksum_at : checksum_at + 2] = new_checksum.to_bytes(2, "big")
    return bytes(out)


def _update_unaligned(old: bytes, new: bytearray, at: int, checksum: int, end: int) -> int:
    """Adjust the checksum for a two-byte change that straddles three 16-bit words."""
    base = at - 1
    for word in range(base, base + 4, 2):
        if word + 2 > end:
            # The odd last byte of the segment is summed as if padded with zero.
            old_word = old[word] << 8
            new_word = new[word] << 8
        else:
            old_word = int.from_bytes(old[word : word + 2], "big")
            new_word = int.from_bytes(new[word : word + 2], "big")
        checksum = checksum_update(checksum, old_word, new_word)
    return checksum


def clamp_mss_frame(frame: bytes, max_mss: int) -> bytes:
    """:func:`clamp_mss` for an Ethernet frame (VLAN tags kept). Never raises on input."""
    try:
        ethertype, offset = payload_offset(frame)
    except DecodeError:
        return frame
    if ethertype != EtherType.IPV4 or len(frame) < offset + TCP_MIN_HEADER_LEN + 20:
        return frame
    # Fast exit before copying anything: only SYNs carry an MSS option.
    ihl = (frame[offset] & 0x0F) * 4
    if frame[offset + 9] != IpProto.TCP or len(frame) <= offset + ihl + 13:
        return frame
    if not frame[offset + ihl + 13] & FLAG_SYN:
        return frame
    packet = frame[offset:]
    clamped = clamp_mss(packet, max_mss)
    return frame if clamped is packet else frame[:offset] + clamped
