"""I/O. The TAP device: Ethernet frames between the kernel and the node.

:class:`TapDevice` is the device itself through python-pytun (``IFF_TAP | IFF_NO_PI``: whole Ethernet
frames, no packet-information prefix), created with the configured name, MTU and MAC address, brought up
and made non-blocking. :class:`TapPort` runs it in the event loop for the node: ``loop.add_reader`` on
the descriptor and, on each wake-up, a drain loop that reads up to ``max_frames`` frames and hands them
over as one list. That is the design measured fastest here (a wake-up per frame costs more than the
frame); see issue 5's figures.

Offloads (issue 7) enter through one seam: ``IFF_VNET_HDR`` prefixes every frame read and written with a
``virtio_net_hdr`` so that the kernel can hand over 64 KiB TCP segments unsplit. :data:`TAP_FLAGS` and
:attr:`TapDevice.frame_offset` are where that changes: set the flag (and ``TUNSETVNETHDRSZ`` /
``TUNSETOFFLOAD`` after opening), make ``frame_offset`` the header length, and size reads for 64 KiB.
Until then frames are plain Ethernet and ``frame_offset`` is 0.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections import Counter
from typing import Any, Protocol

import pytun

from .state import format_mac

log = logging.getLogger(__name__)

TAP_FLAGS = pytun.IFF_TAP | pytun.IFF_NO_PI
"""Ethernet frames without the 4-byte packet-information prefix. The offload seam: add IFF_VNET_HDR."""

ETHERNET_OVERHEAD = 18
"""Bytes of a frame beyond the MTU: 14 of Ethernet header plus 4 of an 802.1Q tag, which the kernel may
send on a TAP device. Reads are sized MTU + this, so that no frame is ever truncated."""

DRAIN_FRAMES = 64
"""Frames read per wake-up at most: enough to amortise the wake-up (a few µs) over many frames, few
enough that one wake-up holds the event loop for well under a millisecond at Python's ~10 µs a frame."""


class TapError(Exception):
    """The TAP device could not be created or configured; the message says which and why."""


class TapDevice:
    """An open TAP device. Create with :meth:`open`; :meth:`close` removes the device (it is not
    persistent, so the kernel also removes it when the process ends)."""

    __slots__ = ("_dev", "_fd", "_read_size", "counters", "frame_offset", "mac", "mtu", "name")

    def __init__(self, dev: Any, name: str, mtu: int, mac: bytes) -> None:
        self._dev = dev
        self._fd: int = dev.fileno()
        self.name = name
        self.mtu = mtu
        self.mac = mac
        self.frame_offset = 0
        """Bytes before the Ethernet header in each frame (the virtio_net_hdr once offloads are on)."""
        self._read_size = mtu + ETHERNET_OVERHEAD
        self.counters: Counter[str] = Counter()

    @classmethod
    def open(cls, name: str, *, mtu: int, mac: bytes) -> TapDevice:
        """Create TAP device ``name`` with ``mtu`` and ``mac`` (6 bytes), bring it up, and make its
        descriptor non-blocking and not inherited by child processes."""
        if len(mac) != 6:
            raise ValueError("a MAC address has 6 bytes")
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
        log.info("TAP device %s up: MAC %s, MTU %d", dev.name, format_mac(mac), mtu)
        return cls(dev, dev.name, mtu, mac)

    def fileno(self) -> int:
        return self._fd

    def set_mtu(self, mtu: int) -> None:
        """Change the MTU (the node may learn a smaller underlay MTU after start)."""
        try:
            self._dev.mtu = mtu
        except pytun.Error as exc:
            raise TapError(f"cannot set the MTU of {self.name} to {mtu}: {_reason(exc, self.name)}") from None
        self.mtu = mtu
        self._read_size = mtu + ETHERNET_OVERHEAD
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

    def write(self, frame: bytes) -> bool:
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
    ) -> None:
        self.device = TapDevice.open(device, mtu=mtu, mac=mac)
        self.handler = handler
        self.max_frames = max_frames
        self.counters: Counter[str] = Counter()

    def send(self, frame: bytes) -> bool:
        """Write one frame to the kernel; see :meth:`TapDevice.write`."""
        ok = self.device.write(frame)
        if ok:
            self.counters["tx_frames"] += 1
            self.counters["tx_bytes"] += len(frame)
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
            **self.counters,
            **self.device.counters,
        }
