"""Pure. The receiving TAP's coalesced TCP frame, built in place while datagrams are opened: each
datagram's plaintext is decrypted straight into the frame it joins, so the segments of one flow reach
the TAP as one GSO super-frame with no copy of their payloads (the in-place form of
``vnproto.coalesce``).

Theory of operation. Over a 1500-byte underlay a peer cuts a 64 KiB TCP super-frame into ~45 datagrams.
Opening each into a new plaintext, joining a virtio frame around it and merging the frames again in
``coalesce`` copies every payload twice. :class:`TcpRun` owns one buffer the size of the largest frame
and tells the opener where to decrypt the next plaintext (:meth:`TcpRun.slot`):

- with no open run, at a fresh position (:data:`FRESH`) far enough from the start that the virtio
  header and our Ethernet header fit in front of the IPv4 packet: the plaintext becomes a frame where
  it lies (:meth:`TcpRun.start`);
- with an open run, so that the next segment's headers overlap the run's last bytes and its payload
  starts exactly where the run ends. The bytes the headers cover are saved first (about 70) and put
  back once the headers were read (:meth:`TcpRun.append`). A plaintext that does not continue the run
  is copied out, the run is written, and the plaintext is moved to the fresh position: a copy only
  when a run ends on something other than its own end (a different flow, a non-TCP packet).

Every plaintext is laid out as the caller's own header bytes (``lead``, compared whole between the
segments of a run), optionally a virtio-net header, and an IPv4 packet; :meth:`TcpRun.start` says where
those are. A run continues with the rules of ``coalesce`` (Linux's ``tcp_gro_receive``), for untagged
IPv4 without options: the same peer and lead bytes, the same IP and TCP headers except length,
identification, checksums, sequence number and the flags PSH/FIN (CWR never after the first), the next
sequence number, segments of the run's size (a GSO piece of that size counts as several) with a short
one, PSH or FIN ending the run, and at most ``max_ip`` bytes of IP packet. A run of several segments is
written with a virtio header "TCP GSO, NEEDS_CSUM" and the pseudo-header sum in the checksum field; a
run of one is written as it came (its virtio header was checked by the caller).

The run is written when it ends, when something else arrives, or at :meth:`TcpRun.flush` (the end of
the socket's wake-up): the frame is handed to ``write`` as a view that is valid during the call only.
A plaintext larger than the buffer has no slot (-1): the caller opens it the ordinary way.
"""

from __future__ import annotations

from collections.abc import Callable

from .coalesce import _plain_header_gso
from .segment import (
    PROTO_TCP,
    TCP_ACK,
    TCP_CWR,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    TCP_URG,
    ip_checksum,
    partial_field,
    sum16,
)
from .virtio import GSO_ECN, NO_OFFLOAD, VNET_HDR, VNET_HDR_LEN, GsoType, VnetFlag

ETH_LEN = 14
FRAME_HEAD = VNET_HDR_LEN + ETH_LEN
"""What a virtio frame has before its IPv4 packet: the virtio-net header and the Ethernet header."""
FRESH = FRAME_HEAD
"""Where a plaintext that starts a frame is put: its IPv4 packet, at ``FRESH + ip_at``, has room for
:data:`FRAME_HEAD` bytes in front of it whatever the caller's lead (``ip_at >= 0``)."""
MAX_IP = 0xFFFF
CAPACITY = FRESH + 64 + MAX_IP + 64
"""The buffer: a fresh slot, the longest lead and virtio header we expect (64), the largest IPv4 packet,
and slack for a continuation's headers; a plaintext that does not fit has no slot."""
PLAIN_L3 = FRAME_HEAD
"""The IPv4 header's offset in a frame (untagged)."""
_L4 = PLAIN_L3 + 20
_TCPV4 = int(GsoType.TCPV4)
_NEEDS_CSUM = int(VnetFlag.NEEDS_CSUM)
_BAD_FLAGS = TCP_SYN | TCP_RST | TCP_URG
_END_FLAGS = TCP_PSH | TCP_FIN
_FREE_FLAGS = TCP_PSH | TCP_FIN | TCP_CWR
MAX_HEADERS = 256
"""Distinct virtio headers of continuations remembered (the table starts again when full)."""

_MASKS: dict[tuple[int, int, int], int] = {}


def _mask(ip_at: int, vh_at: int, hlen: int) -> int:
    """The bytes of a plaintext up to its payload (the caller's lead, a virtio header at ``vh_at``
    unless -1, an IPv4 header without options and a TCP header, ``hlen`` bytes together, at
    ``ip_at``) that must be equal between the segments of a run, as an integer mask: all but the
    virtio header (checked on its own), IP length, identification and checksum, TCP sequence number,
    the flags PSH, FIN and CWR, and TCP checksum."""
    mask = _MASKS.get((ip_at, vh_at, hlen))
    if mask is None:
        keep = bytearray(b"\xff" * (ip_at + hlen))
        if vh_at >= 0:
            keep[vh_at : vh_at + VNET_HDR_LEN] = bytes(VNET_HDR_LEN)
        for at, width in ((2, 4), (10, 2), (24, 4), (36, 2)):
            keep[ip_at + at : ip_at + at + width] = bytes(width)
        keep[ip_at + 33] = 0xFF & ~_FREE_FLAGS
        mask = _MASKS[(ip_at, vh_at, hlen)] = int.from_bytes(keep, "big")
    return mask


class TcpRun:
    """One buffer in which received plaintexts become TAP frames (see the module's docstring)."""

    __slots__ = (
        "_addr_sum",
        "_count",
        "_data",
        "_end",
        "_eth",
        "_first_flags",
        "_gso",
        "_hlen",
        "_ip_at",
        "_key",
        "_l3",
        "_last_flags",
        "_mask",
        "_max_ip",
        "_open",
        "_peer",
        "_room",
        "_saved",
        "_seg",
        "_seq",
        "_size",
        "_slot",
        "_slot_size",
        "_start",
        "_vh",
        "_vh_at",
        "_vh_gso",
        "_write",
        "buf",
        "merged",
        "view",
        "writes",
    )

    def __init__(self, write: Callable[[memoryview], object], eth: bytes, max_ip: int = MAX_IP) -> None:
        """``write`` gives a finished virtio frame to the TAP (a view valid during the call); ``eth`` is
        the Ethernet header put before every packet."""
        if len(eth) != ETH_LEN:
            raise ValueError("eth must be a 14-byte Ethernet header")
        if not 0 < max_ip <= MAX_IP:
            raise ValueError(f"max_ip {max_ip} out of range")
        self.buf = bytearray(CAPACITY)
        self.view = memoryview(self.buf)
        self._write = write
        self._eth = eth
        self._max_ip = max_ip
        self._open = False
        self._saved: bytes | None = None
        self._slot = self._slot_size = 0
        self._gso: dict[bytes, int] = {}
        self._peer: object = None
        self._vh = b""
        self._vh_gso = -1
        self._ip_at = self._vh_at = self._hlen = 0
        self._start = self._l3 = self._data = self._end = 0
        self._size = self._seg = self._room = self._seq = self._count = 0
        self._first_flags = self._last_flags = self._addr_sum = 0
        self._key = self._mask = 0
        self.writes = 0
        """Frames written."""
        self.merged = 0
        """Segments that joined a run after its first (each a write saved)."""

    # -- the opener's side -------------------------------------------------------------------------------

    def slot(self, size: int) -> int:
        """Where to decrypt the next plaintext of ``size`` bytes in :attr:`buf` (-1: it does not fit;
        open it elsewhere). Must be followed by :meth:`append` (the plaintext is there) or
        :meth:`release` (it is not: the open failed, or it is for someone else)."""
        if self._saved is not None:
            raise RuntimeError("slot() twice without append() or release()")
        if self._open:
            overlap = self._ip_at + self._hlen
            at = self._end - overlap
            if self._size + size - overlap <= self._room and at + size <= CAPACITY:
                self._saved = bytes(self.view[at : self._end])
                self._slot, self._slot_size = at, size
                return at
            self.flush()
        if FRESH + size > CAPACITY:
            return -1
        self._saved = b""
        self._slot, self._slot_size = FRESH, size
        return FRESH

    def release(self) -> None:
        """The slot was not used for a plaintext of ours: put back what it covered."""
        saved = self._saved
        if saved:
            at = self._slot
            self.view[at : at + len(saved)] = saved
        self._saved = None

    def append(self, peer: object) -> int:
        """The plaintext from ``peer`` is in the slot: -1 when it continued the open run (nothing more to
        do), else the offset in :attr:`buf` where it now lies, the open run written (the caller
        inspects it and calls :meth:`start`, or copies it out)."""
        saved = self._saved
        self._saved = None
        if saved is None:
            raise RuntimeError("append() without slot()")
        at, size = self._slot, self._slot_size
        if not saved:
            return at
        buf = self.buf
        ip_at = self._ip_at
        l3 = at + ip_at
        l4 = l3 + 20
        length = size - ip_at - self._hlen
        vh_at = self._vh_at
        if vh_at < 0:
            gso = 0
        elif buf[at + vh_at : at + vh_at + VNET_HDR_LEN] == self._vh:
            gso = self._vh_gso  # the same virtio header as the last segment's
        else:
            gso = self._header_gso(bytes(buf[at + vh_at : at + vh_at + VNET_HDR_LEN]))
        flags = buf[l4 + 13]
        if (
            length > 0
            and gso >= 0
            and (gso == self._seg if gso else length <= self._seg)
            and (buf[l3 + 2] << 8 | buf[l3 + 3]) == size - ip_at
            and int.from_bytes(buf[l4 + 4 : l4 + 8], "big") == self._seq
            and not flags & TCP_CWR
            and peer == self._peer
            and int.from_bytes(buf[at : l4 + self._hlen - 20], "big") & self._mask == self._key
        ):
            end = self._end
            self.view[at:end] = saved  # the run's last bytes, under the new segment's headers
            self._end = end + length
            self._size += length
            self._seq = (self._seq + length) & 0xFFFFFFFF
            self._last_flags = flags
            self._count += 1
            self.merged += 1
            if length % self._seg or flags & _END_FLAGS:
                self.flush()
            return -1
        plaintext = bytes(self.view[at : at + size])
        self.view[at : at + len(saved)] = saved
        self.flush()
        self.view[FRESH : FRESH + size] = plaintext
        self._slot = FRESH
        return FRESH

    def start(self, ip_at: int, vh_at: int, peer: object) -> None:
        """The plaintext at the fresh slot (from :meth:`append`) carries an IPv4 packet at ``ip_at``
        and its virtio-net header at ``vh_at`` (-1: none, a complete packet) - checked by the caller
        as the kernel would check it. Make it a frame where it lies, and write it at once unless it
        can start a run."""
        at, size = self._slot, self._slot_size
        if at != FRESH or not 0 <= ip_at <= size or (vh_at >= 0 and vh_at + VNET_HDR_LEN > ip_at):
            raise ValueError("start() takes the plaintext at the fresh slot, with its layout")
        buf, view = self.buf, self.view
        l3 = at + ip_at
        start = l3 - FRAME_HEAD
        vh = bytes(view[at + vh_at : at + vh_at + VNET_HDR_LEN]) if vh_at >= 0 else NO_OFFLOAD
        key = int.from_bytes(buf[at:l3], "big")  # lead and virtio header, before the frame head covers them
        view[start : start + VNET_HDR_LEN] = vh
        view[start + VNET_HDR_LEN : l3] = self._eth
        end = at + size
        gso = self._run_start(l3, end, vh)
        if gso < 0:
            self._emit(start, end)
            return
        self._open = True
        self._peer = peer
        self._ip_at, self._vh_at = ip_at, vh_at
        l4 = l3 + 20
        data = l4 + (buf[l4 + 12] >> 4) * 4
        self._start, self._l3, self._data, self._end = start, l3, data, end
        self._hlen = hlen = data - l3
        self._size = size = end - data
        self._seg = gso or size
        self._room = self._max_ip - hlen
        self._seq = (int.from_bytes(buf[l4 + 4 : l4 + 8], "big") + size) & 0xFFFFFFFF
        self._first_flags = self._last_flags = buf[l4 + 13]
        self._addr_sum = sum16(buf[l3 + 12 : l3 + 20])
        self._mask = mask = _mask(ip_at, vh_at, hlen)
        self._key = ((key << (hlen * 8)) | int.from_bytes(buf[l3:data], "big")) & mask
        self._count = 1

    def flush(self) -> None:
        """Write the open run (the socket's wake-up ended, or something else arrives)."""
        if not self._open:
            return
        self._open = False
        start, end = self._start, self._end
        if self._count > 1:
            buf = self.buf
            l3, data = self._l3, self._data
            l4 = l3 + 20
            total = end - l3
            buf[l3 + 2] = total >> 8
            buf[l3 + 3] = total & 0xFF
            ip_checksum(buf, l3)
            first = self._first_flags
            buf[l4 + 13] = (first & ~_END_FLAGS) | (self._last_flags & _END_FLAGS)
            pseudo = partial_field(self._addr_sum + PROTO_TCP + end - l4)
            buf[l4 + 16] = pseudo >> 8
            buf[l4 + 17] = pseudo & 0xFF
            gso_type = _TCPV4 | (GSO_ECN if first & TCP_CWR else 0)
            hdr_len, csum_start = data - start - VNET_HDR_LEN, l4 - start - VNET_HDR_LEN
            VNET_HDR.pack_into(buf, start, _NEEDS_CSUM, gso_type, hdr_len, self._seg, csum_start, 16)
        self._emit(start, end)

    # -- the rules ---------------------------------------------------------------------------------------

    def _emit(self, start: int, end: int) -> None:
        self.writes += 1
        self._write(self.view[start:end])

    def _run_start(self, l3: int, end: int, vh: bytes) -> int:
        """The segment size a run of the frame whose IPv4 packet is at ``l3`` (ending at ``end``) would
        have (0: its payload length), or -1 when it cannot start a run."""
        buf = self.buf
        if end - l3 < 41 or buf[l3] != 0x45 or buf[l3 + 9] != PROTO_TCP:
            return -1
        if (buf[l3 + 2] << 8 | buf[l3 + 3]) != end - l3 or (buf[l3 + 6] << 8 | buf[l3 + 7]) & 0x3FFF:
            return -1  # trailing bytes, or a fragment
        l4 = l3 + 20
        data = l4 + (buf[l4 + 12] >> 4) * 4
        flags = buf[l4 + 13]
        if data - l4 < 20 or data >= end or flags & _BAD_FLAGS or not flags & TCP_ACK or flags & _END_FLAGS:
            return -1
        gso = _plain_header_gso(vh, _L4)
        if gso < 0 or (end - data) % (gso or end - data):
            return -1
        return gso

    def _header_gso(self, vh: bytes) -> int:
        """The segment size a continuation's virtio header declares (0: not GSO; -1: refused),
        remembered per header and as the last one seen."""
        gso = self._gso.get(vh)
        if gso is None:
            if len(self._gso) >= MAX_HEADERS:
                self._gso.clear()
            gso = self._gso[vh] = _plain_header_gso(vh, _L4)
        self._vh, self._vh_gso = vh, gso
        return gso
