"""I/O. The TAP device: Ethernet frames between the kernel and the node.

:class:`TapDevice` is the device itself through python-pytun (``IFF_TAP | IFF_NO_PI``: whole Ethernet
frames, no packet-information prefix), created with the configured name, MTU and MAC address, brought up
and made non-blocking. :class:`TapPort` runs it in the event loop for the node: ``loop.add_reader`` on
the descriptor and, on each wake-up, a drain loop that reads up to ``max_frames`` frames and hands them
over as one list. That is the design measured fastest here (a wake-up per frame costs more than the
frame); see issue 5's figures.

Offloads (issue 7): ``TapDevice.open(..., offload=True)`` opens the device with ``IFF_VNET_HDR``, so
that every frame read and written starts with a 10-byte ``virtio_net_hdr`` (``vnproto.VirtioNetHdr``),
tells the kernel that header is little-endian (``TUNSETVNETLE``) and 10 bytes long
(``TUNSETVNETHDRSZ``), and enables offloads with ``TUNSETOFFLOAD``: checksums, TSO for IPv4 and IPv6
(with ECN), and USO (UDP segmentation, Linux 6.2+) where offered. The kernel then hands over TCP
"super-frames" of up to 64 KiB with their checksums left partial, and accepts such frames back. The
kernel refuses feature bits it does not know with EINVAL, so the sets are tried from the richest down
(:data:`OFFLOAD_LEVELS`), and where even the header is refused the device is re-opened plain; either
way the log says what was enabled, and :attr:`TapDevice.offloads` and :attr:`TapDevice.frame_offset`
(10 with the header, 0 without) tell the node what it got.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import socket
import struct
from collections import Counter
from typing import Any, Protocol

import pytun

from vnproto import NO_OFFLOAD, VNET_HDR_LEN

from .state import format_mac

log = logging.getLogger(__name__)

TAP_FLAGS = pytun.IFF_TAP | pytun.IFF_NO_PI
"""Ethernet frames without the 4-byte packet-information prefix. The offload seam: add IFF_VNET_HDR."""

ETHERNET_OVERHEAD = 18
"""Bytes of a frame beyond the MTU: 14 of Ethernet header plus 4 of an 802.1Q tag, which the kernel may
send on a TAP device. Reads are sized MTU + this, so that no frame is ever truncated."""

TUNSETOFFLOAD = 0x400454D0
"""``_IOW('T', 208, unsigned int)``; the feature bits are the argument itself, not a pointer."""
TUNSETVNETHDRSZ = 0x400454D8
"""``_IOW('T', 216, int)``: the size of the header before each frame (10, without num_buffers)."""
TUNSETVNETLE = 0x400454DC
"""``_IOW('T', 220, int)``: the header's integers are little-endian whatever the host's byte order."""

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
"""USO4/USO6 (Linux 6.2): UDP datagrams sent with UDP_SEGMENT arrive as one frame (GSO type UDP_L4).
TUN_F_UFO (0x10, UDP fragmentation) is never asked for: the underlay must not carry fragments."""

OFFLOAD_NAMES = {
    TUN_F_CSUM: "csum",
    TUN_F_TSO4: "tso4",
    TUN_F_TSO6: "tso6",
    TUN_F_TSO_ECN: "tso_ecn",
    TUN_F_USO4: "uso4",
    TUN_F_USO6: "uso6",
}

OFFLOAD_LEVELS = (
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
    TUN_F_CSUM,
)
"""Feature sets tried in turn until the kernel accepts one: the kernel answers EINVAL to any bit it
does not know (USO before 6.2), and TSO needs CSUM. Checksum offload alone still spares the node the
checksums of every frame it reads."""

MAX_OFFLOAD_FRAME = 65535 + ETHERNET_OVERHEAD
"""The largest frame a TAP with TSO hands over: an IP packet of 64 KiB with its Ethernet header."""

GSO_MAX_SIZE = 62000
"""The largest super-frame the kernel hands over (``gso_max_size`` of the device, 64 KiB by default):
one must fit one overlay datagram whole on a 65535-byte path (65507 bytes of UDP payload less the
link's and the virtual network's headers), so that it takes one AEAD call and is never cut in two."""

IFLA_GSO_MAX_SIZE = 41
"""rtnetlink attribute of ``RTM_NEWLINK`` (include/uapi/linux/if_link.h)."""
RTM_NEWLINK = 16
NLM_F_REQUEST_ACK = 0x1 | 0x4

DRAIN_FRAMES = 64
"""Frames read per wake-up at most: enough to amortise the wake-up (a few µs) over many frames, few
enough that one wake-up holds the event loop for well under a millisecond at Python's ~10 µs a frame."""


class TapError(Exception):
    """The TAP device could not be created or configured; the message says which and why."""


class TapDevice:
    """An open TAP device. Create with :meth:`open`; :meth:`close` removes the device (it is not
    persistent, so the kernel also removes it when the process ends)."""

    __slots__ = ("_dev", "_fd", "_read_size", "counters", "frame_offset", "mac", "mtu", "name", "offloads")

    def __init__(self, dev: Any, name: str, mtu: int, mac: bytes, offloads: int = 0) -> None:
        self._dev = dev
        self._fd: int = dev.fileno()
        self.name = name
        self.mtu = mtu
        self.mac = mac
        self.offloads = offloads
        """The TUN_F_* bits the kernel accepted (0: a plain device, no virtio-net header)."""
        self.frame_offset = VNET_HDR_LEN if offloads else 0
        """Bytes before the Ethernet header in each frame: the virtio_net_hdr when offloads are on."""
        self._read_size = self._size_for(mtu)
        self.counters: Counter[str] = Counter()

    def _size_for(self, mtu: int) -> int:
        if self.offloads & (TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6):
            return VNET_HDR_LEN + max(MAX_OFFLOAD_FRAME, mtu + ETHERNET_OVERHEAD)
        return self.frame_offset + mtu + ETHERNET_OVERHEAD

    @property
    def offload_names(self) -> list[str]:
        """The accepted offloads by name, e.g. ``["csum", "tso4", "tso6", "tso_ecn"]``."""
        return [text for bit, text in OFFLOAD_NAMES.items() if self.offloads & bit]

    @classmethod
    def open(cls, name: str, *, mtu: int, mac: bytes, offload: bool = False) -> TapDevice:
        """Create TAP device ``name`` with ``mtu`` and ``mac`` (6 bytes), bring it up, and make its
        descriptor non-blocking and not inherited by child processes. With ``offload``, ask for the
        virtio-net header and offloads (see the module's docstring); where the kernel refuses them the
        device is plain, and the log says so."""
        if len(mac) != 6:
            raise ValueError("a MAC address has 6 bytes")
        dev, offloads = None, 0
        if offload:
            dev, offloads = _open_with_offloads(name)
        if dev is None:
            try:
                dev = pytun.TunTapDevice(name=name, flags=TAP_FLAGS)
            except pytun.Error as exc:
                raise TapError(f"cannot create TAP device {name}: {_reason(exc, name)}") from None
        try:
            dev.hwaddr = mac
            dev.mtu = mtu
            dev.up()
        except pytun.Error as exc:
            dev.close()
            raise TapError(f"cannot configure TAP device {name}: {_reason(exc, name)}") from None
        fd = dev.fileno()
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)
        tap = cls(dev, dev.name, mtu, mac, offloads)
        if offloads & (TUN_F_TSO4 | TUN_F_TSO6):
            try:
                set_gso_max_size(dev.name, GSO_MAX_SIZE)
            except OSError as exc:  # an older kernel: super-frames of 64 KiB, cut in two on big paths
                log.info("TAP device %s: gso_max_size not set (%s)", dev.name, exc.strerror)
        log.info(
            "TAP device %s up: MAC %s, MTU %d, offloads %s",
            dev.name,
            format_mac(mac),
            mtu,
            ",".join(tap.offload_names) or "none",
        )
        return tap

    def fileno(self) -> int:
        return self._fd

    def set_mtu(self, mtu: int) -> None:
        """Change the MTU (the node may learn a smaller underlay MTU after start)."""
        try:
            self._dev.mtu = mtu
        except pytun.Error as exc:
            raise TapError(f"cannot set the MTU of {self.name} to {mtu}: {_reason(exc, self.name)}") from None
        self.mtu = mtu
        self._read_size = self._size_for(mtu)
        log.info("TAP device %s: MTU %d", self.name, mtu)

    def read_many(self, max_frames: int = DRAIN_FRAMES) -> list[bytes]:
        """Up to ``max_frames`` frames that the kernel has queued, without blocking (an empty list when
        there are none)."""
        frames: list[bytes] = []
        read, fd, size = os.read, self._fd, self._read_size
        for _ in range(max_frames):
            try:
                frames.append(read(fd, size))
            except BlockingIOError:
                break
            except OSError as exc:
                # EIO while the interface is being taken down; nothing to read now.
                self.counters["read_errors"] += 1
                log.debug("TAP %s: read failed: %s", self.name, exc)
                break
        return frames

    def write(self, frame: bytes | memoryview) -> bool:
        """Give one frame to the kernel, as if it had arrived on the device's wire. False (counted,
        logged at debug) when the kernel refused it, e.g. a frame shorter than an Ethernet header or
        the device is down."""
        try:
            os.write(self._fd, frame)
        except OSError as exc:
            key = "write_refused" if exc.errno == errno.EINVAL else "write_errors"
            self.counters[key] += 1
            log.debug("TAP %s: write of %d bytes failed: %s", self.name, len(frame), exc)
            return False
        return True

    def close(self) -> None:
        if self._fd >= 0:
            self._dev.close()
            self._fd = -1
            log.info("TAP device %s closed", self.name)


def _open_with_offloads(name: str) -> tuple[Any, int]:
    """The device opened with the virtio-net header and the richest offload set the kernel accepts,
    or ``(None, 0)`` when it refuses the header itself (the caller opens it plain)."""
    try:
        dev = pytun.TunTapDevice(name=name, flags=TAP_FLAGS | pytun.IFF_VNET_HDR)
    except pytun.Error as exc:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if code in (errno.EPERM, errno.EACCES, errno.EBUSY):
            raise TapError(f"cannot create TAP device {name}: {_reason(exc, name)}") from None
        log.warning("TAP device %s: IFF_VNET_HDR refused (%s); running without offloads", name, exc)
        return None, 0
    fd = dev.fileno()
    try:
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
        fcntl.ioctl(fd, TUNSETVNETLE, struct.pack("i", 1))
    except OSError as exc:
        dev.close()
        log.warning(
            "TAP device %s: virtio-net header set-up refused (%s); running without offloads", name, exc
        )
        return None, 0
    for level in OFFLOAD_LEVELS:
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, level)
        except OSError as exc:
            log.info("TAP device %s: offloads %#x refused (%s); trying fewer", name, level, exc.strerror)
            continue
        if level != OFFLOAD_LEVELS[0]:
            missing = [t for b, t in OFFLOAD_NAMES.items() if OFFLOAD_LEVELS[0] & b and not level & b]
            log.warning("TAP device %s: the kernel does not offer %s", name, ", ".join(missing))
        return dev, level
    dev.close()
    log.warning("TAP device %s: the kernel refused every offload; running without them", name)
    return None, 0


def set_gso_max_size(name: str, size: int) -> None:
    """``ip link set dev NAME gso_max_size SIZE``, through rtnetlink. Raises OSError when refused."""
    index = socket.if_nametoindex(name)
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)  # struct ifinfomsg
    body += struct.pack("=HHI", 8, IFLA_GSO_MAX_SIZE, size)  # struct rtattr and its u32
    header = struct.pack("=IHHII", 16 + len(body), RTM_NEWLINK, NLM_F_REQUEST_ACK, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.send(header + body)
        reply = sock.recv(4096)
    error = struct.unpack_from("=i", reply, 16)[0] if len(reply) >= 20 else -errno.EIO  # struct nlmsgerr
    if error:
        raise OSError(-error, os.strerror(-error))


def _reason(exc: pytun.Error, name: str) -> str:
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    text = os.strerror(code) if code is not None else str(exc)
    if code in (errno.EPERM, errno.EACCES):
        return f"{text} (creating a device needs root or CAP_NET_ADMIN)"
    if code == errno.EBUSY:
        return f"{text} (another process holds a TAP device named {name})"
    if code == errno.EINVAL:
        return f"{text} (is {name} an existing device of another kind?)"
    return text


class FrameHandler(Protocol):
    """Where frames read from the TAP device go (the node's ARP/DHCP/DNS/forwarding logic)."""

    def tap_frames(self, frames: list[bytes]) -> None:
        """Called with every batch read in one wake-up, in arrival order. Must not block."""
        ...


class TapPort:
    """The TAP device run in the event loop, as a runtime component: opens the device at
    construction (so that a failure stops the node at start with a clear message), reads in
    ``run()`` until cancelled, hands batches to ``handler``, and closes the device when done.

    With no handler attached, frames are counted as ``unhandled`` and dropped."""

    name = "tap"

    def __init__(
        self,
        device: str,
        *,
        mtu: int,
        mac: bytes,
        handler: FrameHandler | None = None,
        max_frames: int = DRAIN_FRAMES,
        offload: bool = False,
    ) -> None:
        self.device = TapDevice.open(device, mtu=mtu, mac=mac, offload=offload)
        self.handler = handler
        self.max_frames = max_frames
        self.counters: Counter[str] = Counter()

    def send(self, frame: bytes) -> bool:
        """Write one Ethernet frame to the kernel (behind an all-zero virtio-net header when the device
        has offloads); see :meth:`TapDevice.write`."""
        ok = self.device.write(NO_OFFLOAD + frame if self.device.frame_offset else frame)
        if ok:
            self.counters["tx_frames"] += 1
            self.counters["tx_bytes"] += len(frame)
        return ok

    def send_vframe(self, vframe: bytes | memoryview) -> bool:
        """Write one virtio frame (header and Ethernet frame) to a device with offloads."""
        ok = self.device.write(vframe)
        if ok:
            self.counters["tx_frames"] += 1
            self.counters["tx_bytes"] += len(vframe)
        return ok

    def _readable(self) -> None:
        frames = self.device.read_many(self.max_frames)
        if not frames:
            return
        self.counters["rx_frames"] += len(frames)
        self.counters["rx_bytes"] += sum(map(len, frames))
        self.counters["rx_wakeups"] += 1
        if self.handler is None:
            self.counters["unhandled"] += len(frames)
            return
        self.handler.tap_frames(frames)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.device.fileno(), self._readable)
        if self.handler is None:
            log.info("no frame handler attached: frames from %s are counted and dropped", self.device.name)
        try:
            await loop.create_future()  # runs until the owner cancels it
        finally:
            loop.remove_reader(self.device.fileno())
            self.device.close()

    def status(self) -> dict[str, Any]:
        return {
            "device": self.device.name,
            "mac": format_mac(self.device.mac),
            "mtu": self.device.mtu,
            "offloads": self.device.offload_names,
            **self.counters,
            **self.device.counters,
        }
