"""Pure. The virtual network's fast data path for a TAP device with offloads: virtio frames (a 10-byte
virtio-net header and an Ethernet frame, often a 64 KiB TCP super-frame) between the TAP and the
direct overlay links, with the rest handed to the ordinary core (:mod:`ipop.vnet_core`) as plain frames.

Theory of operation
-------------------
*Sending.* A frame read from the TAP is on the fast path when it is an untagged IPv4 frame from an
address this node holds to a member whose holder is cached and reachable over a direct link, and it is
not a TCP SYN (whose MSS the core clamps). It travels as one overlay message of kind
``KIND_UNICAST_VNET``: the five-byte packet header, the frame's virtio-net header, the IPv4 packet (the
Ethernet header is not carried; the receiver writes its own). If that fits one datagram on the link's
measured path (``OverlayService.direct_limit``) it goes whole: one AEAD call for ~44 TCP segments.
Otherwise a GSO frame is cut (``vnproto.segment``, partial checksums: the receiving kernel completes
them) into pieces that fit, and all pieces go out sealed in one batch (one UDP_SEGMENT system call).
A frame that is not GSO and does not fit cannot be cut (the underlay never carries IP fragments): with
DF set the machine gets ICMP "fragmentation needed" naming the size that fits, so its kernel lowers
its path MTU to that member; otherwise it is dropped and counted. Everything else (ARP, DHCP, DNS,
broadcast, lookups, routed links) becomes plain frames - checksums completed, GSO frames cut into
segments - and takes the core's ordinary path.

*Receiving.* Messages of service IPOP from direct links arrive by :meth:`FastPath.app_message`, one
call each. A packet passes the same checks as in :mod:`ipop.receive` - our namespace, to an address we
hold, from a source its sender holds - in three comparisons; one that does not is handed to the core's
receive path (which looks up and answers as usual). A peer's virtio-net header is checked as the
kernel would (``vnproto.header_problem``) before it goes near our kernel. With an offloading TAP the
fast path is also the overlay's ``AppSink``: the overlay decrypts each datagram of a session it knows
straight into a ``vnproto.TcpRun`` (:attr:`FastPath.room`, :meth:`FastPath.opened`), where in-order
TCP segments of one flow become one GSO frame without copying their payloads; the run is written
when it ends and at :meth:`FastPath.end_batch` (the end of the socket's wake-up): one write for what
the peer had to cut into ~44 datagrams. Messages that reach :meth:`FastPath.app_message` instead (a
session's first datagrams, through the node) are collected and merged with ``vnproto.coalesce``. A
TAP without offloads gets every frame as plain segments with complete checksums at once.

No per-packet logging and no per-packet objects beyond the buffers themselves; counters are integers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from overlay import Address, Delivered, Service, app_prefix
from vnproto import (
    NO_OFFLOAD,
    VNET_HDR_LEN,
    DecodeError,
    TcpRun,
    coalesce,
    fragmentation_needed_frame,
    header_problem,
    segment,
    vnet_fields,
)

from .vnconfig import IPV4, MIN_FRAME
from .vnet_core import VnetCore
from .vnwire import HEADER_LEN, KIND_UNICAST, KIND_UNICAST_VNET, packet_header

IPOP = int(Service.IPOP)
APP = 2
"""Bytes of the overlay's application header before our payload (kind and service)."""
ETH = 14
VNET_ETH = VNET_HDR_LEN + ETH
"""Where the IPv4 packet starts in a virtio frame of an untagged Ethernet frame."""
CARRIED = HEADER_LEN + VNET_HDR_LEN
"""Bytes a ``KIND_UNICAST_VNET`` message adds to the IPv4 packet."""
MIN_PACKET = 20
NEEDS_CSUM = 1
MIN_VFRAME = ETH + MIN_PACKET
"""The shortest frame a peer's packet makes: an Ethernet header and an IPv4 header."""
MAX_VFRAME = 65535 + ETH
"""The longest: an IPv4 packet of 64 KiB and its Ethernet header."""
MAX_HEADERS = 256
"""Distinct virtio-net headers remembered (a few per flow and piece size); the table starts again
when full, so a peer sending every possible header costs memory for 256 of them at most."""


class DirectLinks(Protocol):
    """What the fast path needs of the overlay (``ipop.overlayport.OverlayService`` offers it)."""

    def direct_limit(self, dest: Address) -> int:
        """The largest payload one datagram carries to ``dest`` on a direct link now (0: none)."""
        ...

    def send_direct(
        self, dest: Address, service: int, payloads: list[bytes | memoryview], prefixed: bool = False
    ) -> bool:
        """Seal and send ``payloads`` to ``dest`` together; False when there is no direct link.
        ``prefixed``: each payload begins with ``overlay.app_prefix(service)`` already."""
        ...


class FastPath:
    """The offload data path of one node (see the module's docstring)."""

    room: Callable[[int], int]
    """Where in :attr:`view` the overlay decrypts our next message of ``size`` bytes (-1: no
    offloading TAP, or too big for the run's buffer): the run's own method, one call per datagram."""
    unused: Callable[[], None]
    """The room was not used for our message: the run takes back what it covered."""

    def __init__(
        self,
        core: VnetCore,
        links: DirectLinks,
        *,
        tap_offload: bool,
        write_vframe: Callable[[bytes | memoryview], object],
        write_frame: Callable[[bytes], object],
    ) -> None:
        """``write_vframe`` writes a virtio frame to an offloading TAP (it may be given a view that is
        valid during the call only); ``write_frame`` a plain Ethernet frame (to either kind of TAP)."""
        self.core = core
        self.links = links
        self.tap_offload = tap_offload
        self._write_vframe = write_vframe
        self._write_frame = write_frame
        tag = core.tag
        self._uni = packet_header(KIND_UNICAST, tag)
        self._vnet = packet_header(KIND_UNICAST_VNET, tag)
        self._app_uni = app_prefix(IPOP) + self._uni
        self._app_vnet = app_prefix(IPOP) + self._vnet
        """The messages we send, with the overlay's application header in front (``prefixed``)."""
        self._routes = core.mapping.routes
        self._held = core.claims.held
        self._eth = core.config.host_mac + core.remote_mac + IPV4
        self._me = core.config.address
        self._batch: list[bytes] = []
        self._run: TcpRun | None = TcpRun(write_vframe, self._eth) if tap_offload else None
        """Where the overlay decrypts our messages (the :class:`overlay.AppSink` side) and merges
        them into TAP frames in place; only for an offloading TAP."""
        self.room = self._run.slot if self._run is not None else _no_room
        self.unused = self._run.release if self._run is not None else _no_release
        self._append = self._run.append if self._run is not None else _no_append
        self._merged = 0
        """``run.merged`` when the counters were last brought up to date (:meth:`end_batch`)."""
        self._headers: dict[bytes, int] = {}
        """Peers' virtio-net headers seen: the least frame length each fits (-1: never valid)."""
        self.tx_direct = 0
        """Frames sent on the fast path (whole or cut)."""
        self.tx_pieces = 0
        """Datagrams those frames took."""
        self.rx_direct = 0
        """Packets received on the fast path."""
        self.rx_writes = 0
        """TAP writes they took after merging."""
        self.dropped = 0
        """Frames refused: malformed virtio headers, or too big to carry."""

    # -- the machine's frames -----------------------------------------------------------------------

    def tap_vframes(self, vframes: list[bytes], now: float) -> None:
        """Frames read from an offloading TAP in one wake-up, in order."""
        routes, held, links = self._routes, self._held, self.links
        for vf in vframes:
            if vf[22:24] == IPV4 and len(vf) >= VNET_HDR_LEN + MIN_FRAME and vf[24] >> 4 == 4:
                holder = routes.get(vf[40:44])
                if holder is not None and vf[36:40] in held and not _tcp_syn(vf, VNET_HDR_LEN):
                    limit = links.direct_limit(holder)
                    if limit > 0 and self._send(holder, vf, limit, now):
                        continue
            self._plain(vf, now)

    def tap_frames(self, frames: list[bytes], now: float) -> None:
        """Frames read from a TAP without offloads in one wake-up (plain Ethernet frames, one packet
        each): those on the fast path go out per holder in one batch each (one UDP_SEGMENT call for a
        run of equal sizes), in order; the others take the core's path at once."""
        routes, held, links, core = self._routes, self._held, self.links, self.core
        batches: dict[Address, list[bytes]] = {}
        limits: dict[Address, int] = {}
        head = self._app_uni
        for frame in frames:
            if frame[12:14] == IPV4 and len(frame) >= MIN_FRAME and frame[14] >> 4 == 4:
                holder = routes.get(frame[30:34])
                if holder is not None and frame[26:30] in held and not _tcp_syn(frame, 0):
                    limit = limits.get(holder)
                    if limit is None:
                        limit = limits[holder] = links.direct_limit(holder)
                    if limit > 0:
                        if len(frame) - ETH + HEADER_LEN <= limit:
                            batches.setdefault(holder, []).append(frame)
                        else:
                            self._too_big(NO_OFFLOAD + frame, limit - HEADER_LEN)
                        continue
            core.tap_frame(frame, now)
        for holder, batch in batches.items():
            if links.send_direct(holder, IPOP, [head + frame[ETH:] for frame in batch], True):
                self.tx_direct += len(batch)
                self.tx_pieces += len(batch)
                core.tx_packets += len(batch)
            else:
                for frame in batch:  # the link went away meanwhile: the ordinary path
                    core.tap_frame(frame, now)

    def _send(self, holder: Address, vf: bytes, limit: int, now: float) -> bool:
        """Send ``vf`` on the direct link; False when the link refused (the caller takes the slow
        path). A frame that cannot be carried is handled here (ICMP or drop) and counts as sent."""
        mv = memoryview(vf)
        head = self._app_vnet
        payloads: list[bytes | memoryview]
        if len(vf) - VNET_ETH + CARRIED <= limit:
            payloads = [b"".join((head, mv[:VNET_HDR_LEN], mv[VNET_ETH:]))]
        elif vf[1]:  # a GSO frame: cut it to the path
            try:
                pieces = segment(vf, limit - CARRIED + ETH, partial=True)
            except (DecodeError, ValueError):
                self.dropped += 1
                return True
            payloads = []
            for piece in pieces:
                if len(piece) - VNET_ETH + CARRIED > limit:
                    self.dropped += 1  # a UDP datagram larger than the path: never cut smaller
                    continue
                payloads.append(_carried(piece, head))
            if not payloads:
                return True
        else:
            self._too_big(vf, limit - CARRIED)
            return True
        if not self.links.send_direct(holder, IPOP, payloads, True):
            return False
        self.tx_direct += 1
        self.tx_pieces += len(payloads)
        self.core.tx_packets += 1
        return True

    def _too_big(self, vf: bytes, mtu: int) -> None:
        frame = bytes(vf[VNET_HDR_LEN:])
        core = self.core
        if frame[20] & 0x40 and mtu >= 68:  # DF set (68: the least MTU IPv4 allows an ICMP to name)
            try:
                reply = fragmentation_needed_frame(frame, mtu, core.server_ip, core.remote_mac)
            except DecodeError:
                reply = b""
            if reply:
                self._write_frame(reply)
                core.counters["frag_needed_sent"] += 1
                return
        core.counters["too_big_dropped"] += 1

    def _plain(self, vf: bytes, now: float) -> None:
        """The core's ordinary path, which takes plain Ethernet frames with complete checksums."""
        if len(vf) < VNET_HDR_LEN + ETH:
            self.dropped += 1
            return
        if vf[:VNET_HDR_LEN] == NO_OFFLOAD:
            self.core.tap_frame(vf[VNET_HDR_LEN:], now)
            return
        try:  # TCP cut to what the ordinary path carries (a larger MSS than that is the fast path's)
            pieces = segment(vf, self.core.config.carried_mtu + ETH)
        except (DecodeError, ValueError):
            self.dropped += 1
            return
        for piece in pieces:
            self.core.tap_frame(bytes(piece[VNET_HDR_LEN:]), now)

    # -- the overlay's messages ---------------------------------------------------------------------

    def app_message(self, src: Address, plaintext: bytes, now: float) -> None:
        """A message of service IPOP from the direct-link peer ``src`` (``plaintext[2:]`` is ours)."""
        head = plaintext[APP : APP + HEADER_LEN]
        if head == self._vnet:
            at = APP + CARRIED
            vh: bytes | None = plaintext[APP + HEADER_LEN : at]
        elif head == self._uni:
            at, vh = APP + HEADER_LEN, None
        else:
            self._slow(src, plaintext, now)
            return
        if (
            len(plaintext) >= at + MIN_PACKET
            and plaintext[at] >> 4 == 4
            and plaintext[at + 16 : at + 20] in self._held
            and self._routes.get(plaintext[at + 12 : at + 16]) == src
        ):
            self.rx_direct += 1
            self.core.receiver.rx_packets += 1
            packet = memoryview(plaintext)[at:]
            if self._run is not None:
                self._run.flush()  # what the run holds arrived first
            if vh is None or vh == NO_OFFLOAD:
                if self.tap_offload:
                    self._batch.append(b"".join((NO_OFFLOAD, self._eth, packet)))
                else:
                    self.rx_writes += 1
                    self._write_frame(b"".join((self._eth, packet)))
                return
            if not self._header_ok(vh, ETH + len(packet)):
                self.dropped += 1
                return
            vf = b"".join((vh, self._eth, packet))
            if self.tap_offload:
                self._batch.append(vf)
            else:
                self._write_plain(vf)
            return
        if vh is None:
            self._slow(src, plaintext, now)
            return
        # Not on the fast path (a source to look up, an address we no longer hold): the core's path,
        # which takes plain packets.
        packet = memoryview(plaintext)[at:]
        if len(packet) < MIN_PACKET or header_problem(*vnet_fields(vh), ETH + len(packet)):
            self.dropped += 1
            return
        try:
            pieces = segment(b"".join((vh, self._eth, packet)))
        except DecodeError:
            self.dropped += 1
            return
        for piece in pieces:
            self.core.receiver.received(src, KIND_UNICAST, bytes(piece[VNET_ETH:]), now)

    # -- the overlay's messages, decrypted in place (overlay.AppSink) -----------------------------------

    @property
    def view(self) -> memoryview:
        """The run's buffer, where the overlay decrypts our messages (empty: no offloading TAP)."""
        return self._run.view if self._run is not None else memoryview(b"")

    def opened(self, src: Address, size: int, now: float) -> None:
        """Our message from ``src`` is in the room: it joined the open TCP run, or it is checked as in
        :meth:`app_message` and becomes a frame where it lies (or takes the general path, copied)."""
        at = self._append(src)  # a continuation of the run: done (counted from run.merged)
        if at >= 0:
            self._fresh(src, at, size, now)

    def _fresh(self, src: Address, at: int, size: int, now: float) -> None:
        """:meth:`opened` for a message that did not continue the run, now at ``at``."""
        run = self._run
        if run is None:
            return
        if self._batch:
            self._write_batch()  # what :meth:`app_message` collected arrived first
        buf = run.buf
        head = buf[at + APP : at + APP + HEADER_LEN]
        if head == self._vnet:
            ip_at, vh_at = APP + CARRIED, APP + HEADER_LEN
        elif head == self._uni:
            ip_at, vh_at = APP + HEADER_LEN, -1
        else:
            self._slow(src, bytes(buf[at : at + size]), now)
            return
        ip = at + ip_at
        if (
            size >= ip_at + MIN_PACKET
            and buf[ip] >> 4 == 4
            and bytes(buf[ip + 16 : ip + 20]) in self._held
            and self._routes.get(bytes(buf[ip + 12 : ip + 16])) == src
        ):
            if vh_at >= 0:
                vh = bytes(buf[at + vh_at : at + vh_at + VNET_HDR_LEN])
                if vh != NO_OFFLOAD and not self._header_ok(vh, ETH + size - ip_at):
                    self.dropped += 1
                    return
            self.rx_direct += 1
            self.core.receiver.rx_packets += 1
            run.start(ip_at, vh_at, src)
            return
        self.app_message(src, bytes(buf[at : at + size]), now)  # the general path decides

    def _header_ok(self, vh: bytes, frame_len: int) -> bool:
        """``header_problem`` for a peer's virtio-net header, remembered per header: the pieces of one
        super-frame carry the same header, and only its checksum position depends on the length."""
        least = self._headers.get(vh)
        if least is None:
            if len(self._headers) >= MAX_HEADERS:
                self._headers.clear()
            fields = vnet_fields(vh)
            flags, _, _, _, start, offset = fields
            least = start + offset + 2 if flags & NEEDS_CSUM else MIN_VFRAME
            if header_problem(*fields, max(least, MIN_VFRAME)) is not None:
                least = -1
            self._headers[vh] = least
        return least >= 0 and least <= frame_len and MIN_VFRAME <= frame_len <= MAX_VFRAME

    def _slow(self, src: Address, plaintext: bytes, now: float) -> None:
        self.core.delivered(Delivered(src, self._me, IPOP, plaintext[APP:], 1, True), now)

    def _write_plain(self, vf: bytes) -> None:
        try:
            pieces = segment(vf)
        except DecodeError:
            self.dropped += 1
            return
        for piece in pieces:
            self.rx_writes += 1
            self._write_frame(bytes(piece[VNET_HDR_LEN:]))

    def end_batch(self) -> None:
        """The overlay read everything one wake-up brought: merge and write what was collected."""
        run = self._run
        if run is not None:
            run.flush()
            merged = run.merged - self._merged  # segments that joined a run, counted at once
            if merged:
                self._merged = run.merged
                self.rx_direct += merged
                self.core.receiver.rx_packets += merged
        if self._batch:
            self._write_batch()

    def _write_batch(self) -> None:
        batch = self._batch
        self._batch = []
        frames = coalesce(batch) if len(batch) > 1 else batch
        write = self._write_vframe
        self.rx_writes += len(frames)
        for vf in frames:
            write(vf)  # type: ignore[arg-type]

    def status(self) -> dict[str, int]:
        return {
            "tx_direct": self.tx_direct,
            "tx_pieces": self.tx_pieces,
            "rx_direct": self.rx_direct,
            "rx_writes": self.rx_writes + (self._run.writes if self._run is not None else 0),
            "dropped": self.dropped,
        }


def _no_room(size: int) -> int:
    return -1


def _no_release() -> None:
    pass


def _no_append(peer: object) -> int:
    raise AssertionError("nothing was decrypted into a run: no offloading TAP")


def _carried(piece: bytes | bytearray | memoryview, head: bytes) -> bytes | memoryview:
    """The message of a piece ``segment`` cut: ``head`` (the overlay's application header and our
    packet header), the virtio header, the IPv4 packet. A piece of a cut frame is a fresh bytearray of
    its own, so the Ethernet header it will not carry is overwritten in place by the headers and the
    message is a view of it: no copy of the ~1.4 KB payload per datagram (one piece returned whole,
    ``vf`` itself, is joined instead)."""
    if isinstance(piece, bytearray):
        piece[VNET_ETH - VNET_HDR_LEN : VNET_ETH] = piece[:VNET_HDR_LEN]
        piece[VNET_ETH - VNET_HDR_LEN - len(head) : VNET_ETH - VNET_HDR_LEN] = head
        return memoryview(piece)[VNET_ETH - VNET_HDR_LEN - len(head) :]
    pv = memoryview(piece)
    return b"".join((head, pv[:VNET_HDR_LEN], pv[VNET_ETH:]))


def _tcp_syn(buf: bytes, base: int) -> bool:
    """Whether the IPv4 frame at ``base`` in ``buf`` is a TCP segment with SYN set."""
    ip = base + ETH
    if buf[ip + 9] != 6:
        return False
    at = ip + (buf[ip] & 0x0F) * 4 + 13
    return at < len(buf) and bool(buf[at] & 0x02)
