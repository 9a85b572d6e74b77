"""I/O. Socket options of the overlay's UDP socket for a fast data plane: DF and path MTU behaviour,
UDP GSO sends (``UDP_SEGMENT``) and UDP GRO receives (``UDP_GRO``), with helpers that use them.

- :func:`set_pmtu_discover`: ``IP_MTU_DISCOVER`` (``IPV6_MTU_DISCOVER``). ``"probe"``
  (IP_PMTUDISC_PROBE) sets DF on every datagram but ignores the kernel's cached path MTU, so the
  overlay's own discovery (``overlay.pmtu``) decides what to send, and a datagram larger than the
  outgoing interface fails at once with EMSGSIZE instead of being fragmented. ``"do"`` also sets DF and
  makes the kernel refuse what exceeds its cached path MTU (learnt from ICMP), readable with
  :func:`path_mtu` on a connected socket.
- :func:`send_segments`: one ``sendmsg`` with a ``UDP_SEGMENT`` control message hands the kernel a
  buffer of many equal-sized datagrams (the last may be shorter) for one destination: one system call
  and one trip through the stack for up to 64 datagrams (the kernel's UDP_MAX_SEGMENTS).
- :func:`enable_gro` and :func:`recv_gro`: with ``UDP_GRO`` on, the kernel may deliver several
  datagrams of one flow, each the same size but the last, as one buffer with their size in a control
  message; :func:`recv_gro` reads one such buffer and splits it back into datagrams (memoryviews, no
  copies).

Both offloads are Linux-only (UDP_SEGMENT since 4.18, UDP_GRO since 5.0); :func:`gso_supported`
and :func:`enable_gro` say whether the kernel offers them, so the caller falls back to one datagram
per system call.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct

log = logging.getLogger(__name__)

# Linux constants that Python 3.11's socket module does not define (include/uapi/linux/in.h, udp.h).
IP_MTU_DISCOVER = 10
IP_MTU = 14
IPV6_MTU_DISCOVER = 23
IPV6_MTU = 24
PMTUDISC_DONT = 0
PMTUDISC_DO = 2
PMTUDISC_PROBE = 3
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104

UDP_MAX_SEGMENTS = 64
"""The most datagrams one UDP_SEGMENT send may carry (the kernel refuses more with EINVAL)."""

UDP_MAX_GSO_BYTES = 65507
"""The most payload one UDP_SEGMENT send may carry in all: the kernel builds the batch as one IPv4 UDP
datagram before it cuts it (65535 less the IP and UDP headers), and refuses a larger one with EMSGSIZE.
A 64 KiB super-frame cut to a 1500-byte path makes ~46 datagrams of 1472 bytes (67 KB): two sends."""

GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
"""Room for the UDP_GRO control message: one int, the size of the datagrams in the buffer."""

_INT = struct.Struct("=i")
_U16 = struct.Struct("=H")
_MODES = {"dont": PMTUDISC_DONT, "do": PMTUDISC_DO, "probe": PMTUDISC_PROBE}


def _is_v6(sock: socket.socket) -> bool:
    return sock.family == socket.AF_INET6


def set_pmtu_discover(sock: socket.socket, mode: str = "probe") -> None:
    """Set how the socket treats DF and path MTU: ``"probe"``, ``"do"`` or ``"dont"`` (see the
    module's docstring). An IPv6 socket gets both options, since it may carry IPv4-mapped traffic."""
    value = _MODES[mode]
    if _is_v6(sock):
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, value)
        with contextlib.suppress(OSError):  # an IPv6-only socket has no IPv4 side
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, value)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, value)


def path_mtu(sock: socket.socket) -> int | None:
    """The kernel's path MTU towards the peer of a *connected* socket (the link MTU, an IP packet
    size), or None when the socket is not connected."""
    level, option = (socket.IPPROTO_IPV6, IPV6_MTU) if _is_v6(sock) else (socket.IPPROTO_IP, IP_MTU)
    try:
        return int(sock.getsockopt(level, option))
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            return None
        raise


def gso_supported(sock: socket.socket) -> bool:
    """Whether the kernel accepts ``UDP_SEGMENT`` on this socket."""
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)  # 0: no segmentation unless a send asks for it
    except OSError:
        return False
    return True


def send_segments(
    sock: socket.socket,
    buffers: list[bytes | bytearray | memoryview],
    segment_size: int,
    addr: tuple[str, int] | None = None,
) -> int:
    """Send ``buffers`` (each ``segment_size`` bytes but the last, which may be shorter; at most
    :data:`UDP_MAX_SEGMENTS`) as that many datagrams with one system call. Returns the bytes sent.
    Raises what ``sendmsg`` raises (BlockingIOError when the buffer is full, EMSGSIZE when a datagram
    is larger than the path allows with DF, EIO when the device cannot segment), for the caller to
    count or fall back on."""
    if not buffers or len(buffers) > UDP_MAX_SEGMENTS:
        raise ValueError(f"send_segments takes 1 to {UDP_MAX_SEGMENTS} buffers, not {len(buffers)}")
    ancillary = [(SOL_UDP, UDP_SEGMENT, _U16.pack(segment_size))]
    if addr is None:
        return sock.sendmsg(buffers, ancillary)
    return sock.sendmsg(buffers, ancillary, 0, addr)


def gso_runs(sizes: list[int]) -> list[tuple[int, int]]:
    """Pure. How to send datagrams of ``sizes`` (in this order) with as few UDP_SEGMENT calls as the
    kernel allows: ``(start, end)`` index ranges, each a run of equal sizes whose last may be shorter,
    of at most :data:`UDP_MAX_SEGMENTS` datagrams and :data:`UDP_MAX_GSO_BYTES` bytes. A range of one
    datagram is for a plain send."""
    runs: list[tuple[int, int]] = []
    i, n = 0, len(sizes)
    while i < n:
        size = sizes[i]
        most = min(UDP_MAX_SEGMENTS, max(1, UDP_MAX_GSO_BYTES // size) if size else UDP_MAX_SEGMENTS)
        j, total = i + 1, size
        while j < n and j - i < most and sizes[j] == size:
            j += 1
            total += size
        if j < n and j - i < most and sizes[j] < size and total + sizes[j] <= UDP_MAX_GSO_BYTES:
            j += 1  # a shorter last datagram ends the run
        runs.append((i, j))
        i = j
    return runs


def enable_gro(sock: socket.socket) -> bool:
    """Turn on ``UDP_GRO``; False when the kernel does not offer it (then each datagram arrives alone)."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError as exc:
        log.info("UDP_GRO not available: %s", exc.strerror)
        return False
    return True


def recv_gro(sock: socket.socket, bufsize: int = 65535) -> tuple[list[memoryview], tuple[str, int]]:
    """Read one buffer from a socket with ``UDP_GRO`` on and split it into the datagrams it holds
    (one when the kernel did not coalesce). Raises BlockingIOError when nothing is queued, like
    ``recvfrom``. A buffer cut short by ``bufsize`` (MSG_TRUNC) yields the datagrams that are whole."""
    data, ancdata, flags, addr = sock.recvmsg(bufsize, GRO_CMSG_SPACE)
    view = memoryview(data)
    size = 0
    for level, kind, cdata in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(cdata) >= _INT.size:
            size = _INT.unpack_from(cdata)[0]
    n = len(view)
    if size <= 0 or size >= n:
        return [view], (addr[0], addr[1])
    parts = [view[i : i + size] for i in range(0, n, size)]
    if flags & socket.MSG_TRUNC and len(parts[-1]) < size:
        parts.pop()  # the tail of a truncated buffer is not a whole datagram
    return parts, (addr[0], addr[1])
