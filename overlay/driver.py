"""I/O. Runs a sans-IO overlay core on a real UDP socket under asyncio.

The design follows what was measured fastest on this kind of machine: no asyncio transports (the
selector datagram transport reads one datagram per wake-up), but ``loop.add_reader`` on a non-blocking
socket and a drain loop that reads up to ``DRAIN`` datagrams per wake-up. The core's clock is
``loop.time()`` (monotonic), and its single timer is one ``loop.call_at`` handle, re-armed only when the
core's deadline moves.

With ``fast=True`` (a real node's data plane) the socket sets DF on every datagram without fragmenting
(``IP_PMTUDISC_PROBE``: the overlay measures each path itself), receives with ``UDP_GRO`` where the
kernel offers it (one read for many datagrams of one flow), and :meth:`UdpDriver.send_datagrams` sends a
batch to one endpoint with ``UDP_SEGMENT`` (one system call for up to 64 datagrams and 65507
bytes). A datagram refused as too big (EMSGSIZE) is reported to ``on_too_big``, for the path MTU
search; when it answers True (anything but a path MTU probe), the datagram is sent again with
fragmentation allowed for that one send. A datagram the core marked :class:`MayFragment` (a message
larger than its link is known to carry) is sent that way at once. ``after_batch`` callbacks run after
each drained batch of received datagrams, so that a receiver can merge what one wake-up read before it
writes anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import Protocol

from .events import Endpoint, MayFragment, OverlayEvent, Transmit
from .rxbuffer import FLOOR, ReceiveBufferSizer
from .udpopts import enable_gro, gso_runs, gso_supported, recv_gro, send_segments, set_pmtu_discover

log = logging.getLogger(__name__)

DRAIN = 64
"""Datagrams read per wake-up: amortises the event loop's cost over many packets (measured 4.6x)."""

RECV_BYTES = 65535
SOCKET_BUFFER = 4 << 20
"""4 MiB send buffer absorbs bursts while the interface is busy (the kernel caps it at wmem_max)."""
RECEIVE_BUFFER = FLOOR
"""The receive buffer a socket starts with; the driver then sizes it to a few milliseconds of what the
node reads (:mod:`overlay.rxbuffer` says why a fixed size is wrong at any rate)."""
SO_RCVBUFFORCE = 33
"""``SO_RCVBUF`` past ``net.core.rmem_max``, for a process with CAP_NET_ADMIN (Linux; Python's socket
module does not name it)."""
SO_MEMINFO = 55
"""``getsockopt`` of the socket's memory counters (Linux): the ninth is the datagrams it dropped."""
_MEMINFO = struct.Struct("9I")

_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B


class Core(Protocol):
    def receive_datagram(self, data: bytes, addr: Endpoint, now: float) -> None: ...
    def datagrams_to_send(self, now: float) -> list[Transmit]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def next_event(self) -> OverlayEvent | None: ...


def parse_endpoint(text: str, default_port: int = 0) -> tuple[str, int]:
    """``"1.2.3.4:5800"``, ``"[::1]:5800"``, ``"udp://host:5800"`` or a bare host."""
    if text.startswith("udp://"):
        text = text[len("udp://") :]
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    else:
        host, port = text, default_port
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


def interface_addresses() -> list[str]:
    """IPv4 addresses of this host's interfaces except loopback: the host candidates of a socket bound
    to the wildcard address."""
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            if name == "lo":
                continue
            request = struct.pack("256s", name.encode()[:15])
            try:
                reply = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
            except OSError:
                continue  # no IPv4 address on this interface
            found.append(socket.inet_ntoa(reply[20:24]))
    return found


def lan_broadcasts(bound_host: str) -> list[str]:
    """IPv4 broadcast addresses of the LANs a socket bound to ``bound_host`` reaches: that address's
    interface, or every interface for the wildcard address. Loopback and TUN/TAP devices (the VPN's own
    interface) are left out: a beacon belongs on the underlay, never inside the VPN."""
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            if name == "lo" or os.path.exists(f"/sys/class/net/{name}/tun_flags"):
                continue
            request = struct.pack("256s", name.encode()[:15])
            try:
                address = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)[20:24]
                mask = fcntl.ioctl(probe.fileno(), _SIOCGIFNETMASK, request)[20:24]
            except OSError:
                continue  # no IPv4 address on this interface
            # From address and mask, not SIOCGIFBRDADDR: ``ip addr add A/N`` sets no broadcast address.
            host = int.from_bytes(address, "big")
            bits = int.from_bytes(mask, "big")
            broadcast = socket.inet_ntoa(((host & bits) | (~bits & 0xFFFFFFFF)).to_bytes(4, "big"))
            if bound_host in ("0.0.0.0", socket.inet_ntoa(address)) and bits < 0xFFFFFFFE:
                found.append(broadcast)
    return found


def open_udp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:
        raise OSError(f"cannot open a UDP socket for {host} ({exc.strerror}); is IPv6 disabled?") from exc
    try:
        sock.setblocking(False)
        for option, size in ((socket.SO_RCVBUF, RECEIVE_BUFFER), (socket.SO_SNDBUF, SOCKET_BUFFER)):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, size)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class UdpDriver:
    """Feeds a core from a UDP socket and sends what it produces. ``on_event`` receives every event the
    core emits; ``flush()`` must be called after the application called into the core directly."""

    def __init__(
        self,
        core: Core,
        sock: socket.socket,
        on_event: Callable[[OverlayEvent], None] | None = None,
        *,
        fast: bool = False,
        on_too_big: Callable[[Endpoint, bytes, float], bool] | None = None,
    ) -> None:
        self.core = core
        self.sock = sock
        self.on_event = on_event
        self.on_too_big = on_too_big
        self.after_batch: list[Callable[[], None]] = []
        self.fast_receive: Callable[[bytes | memoryview, Endpoint, float], bool] | None = None
        """Offered every datagram first (the data path's receive); False hands it to the core. It
        may be given a view of a buffer that is reused after the call: it must not keep it."""
        self.fast_receive_many: (
            Callable[[list[memoryview], Endpoint, float], list[bytes | memoryview]] | None
        ) = None
        """Offered the datagrams of each UDP_GRO read first (the data path's ``receive_many``); the
        ones it returns go to the core. The same rule: it must not keep the views."""
        self.loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.send_errors = 0
        self.rx_bytes = 0
        """Bytes read from the socket (what the receive buffer is sized by)."""
        self.rx_buffer = ReceiveBufferSizer()
        self._force_rcvbuf = True
        """Whether ``SO_RCVBUFFORCE`` may still work (cleared at its first EPERM)."""
        self.listeners: list[socket.socket] = []
        self.closed = False
        self.gso = self.gro = False
        self.df = False
        """Whether the socket sets DF (fast mode): only then is a send switched to fragmentation."""
        if fast:
            with contextlib.suppress(OSError):
                set_pmtu_discover(sock, "probe")
                self.df = True
            self.gso = gso_supported(sock)
            self.gro = enable_gro(sock)
            log.info("UDP socket: DF probing, UDP_SEGMENT %s, UDP_GRO %s", _on(self.gso), _on(self.gro))
        self.loop.add_reader(sock.fileno(), self._readable_gro if self.gro else self._readable)
        self.flush()

    @property
    def local_endpoint(self) -> Endpoint:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def now(self) -> float:
        return self.loop.time()

    def _readable(self) -> None:
        core, sock = self.core, self.sock
        now = self.loop.time()
        recv = sock.recvfrom
        fast = self.fast_receive
        got = 0
        for _ in range(DRAIN):
            try:
                data, addr = recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # ICMP errors surface here (port unreachable): not fatal for UDP
                log.debug("recvfrom: %s", exc)
                continue
            got += len(data)
            endpoint = (addr[0], addr[1])
            if fast is None or not fast(data, endpoint, now):
                core.receive_datagram(data, endpoint, now)
        self._read(got, now)
        for done in self.after_batch:
            done()
        self.flush()

    def _readable_gro(self) -> None:
        core, sock = self.core, self.sock
        now = self.loop.time()
        receive = core.receive_datagram
        fast = self.fast_receive_many
        got = 0
        for _ in range(DRAIN):
            try:
                parts, addr = recv_gro(sock, RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.debug("recvmsg: %s", exc)
                continue
            got += len(parts[0].obj)  # type: ignore[arg-type]  # the whole read buffer
            # The data path opens views of the read buffer (the AEAD reads them in place and writes
            # the plaintext where the data path says): no copy per datagram; only what it does not
            # take is copied for the core, which may keep what it is given.
            rest = parts if fast is None else fast(parts, addr, now)
            for part in rest:
                whole = len(parts) == 1 and isinstance(part, memoryview)
                receive(part.obj if whole else bytes(part), addr, now)  # type: ignore[union-attr,arg-type]
        self._read(got, now)
        for done in self.after_batch:
            done()
        self.flush()

    def _read(self, got: int, now: float) -> None:
        """Count what one wake-up read and, once per window, resize the receive buffer to it."""
        self.rx_bytes += got
        sizer = self.rx_buffer
        if sizer.due(now):
            size = sizer.update(now, self.rx_bytes)
            if size is not None:
                self._set_receive_buffer(size)

    def _set_receive_buffer(self, size: int) -> None:
        """``SO_RCVBUFFORCE`` where the node may (it runs as root for its TAP device): a stock kernel
        caps ``SO_RCVBUF`` at ``net.core.rmem_max``, 208 KiB, below what a fast link needs; the sizer's
        own ceiling bounds it instead. Without the privilege, ``SO_RCVBUF`` within the kernel's cap."""
        if self._force_rcvbuf:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
                return
            except PermissionError:
                self._force_rcvbuf = False
            except OSError as exc:
                log.debug("SO_RCVBUFFORCE %d: %s", size, exc)
                return
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError as exc:
            log.debug("SO_RCVBUF %d: %s", size, exc)

    def status(self) -> dict[str, int | None]:
        """The socket's figures: its receive buffer as the kernel counts it (twice what was asked), the
        datagrams the kernel dropped because it was full, bytes read and send errors."""
        dropped: int | None = None
        with contextlib.suppress(OSError, struct.error):
            dropped = _MEMINFO.unpack(self.sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size))[8]
        buffer: int | None = None
        with contextlib.suppress(OSError):
            buffer = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        return {
            "rx_buffer": buffer,
            "rx_dropped": dropped,
            "rx_bytes": self.rx_bytes,
            "rx_peak_bytes_per_s": int(self.rx_buffer.peak_rate),
            "send_errors": self.send_errors,
        }

    def add_listener(self, sock: socket.socket) -> None:
        """Also feed the core what ``sock`` receives (a socket bound to a LAN's broadcast address, for
        beacons that a socket bound to a unicast address never sees); closed with the driver."""
        sock.setblocking(False)
        self.listeners.append(sock)
        self.loop.add_reader(sock.fileno(), self._readable_listener, sock)

    def _readable_listener(self, sock: socket.socket) -> None:
        now = self.loop.time()
        for _ in range(DRAIN):
            try:
                data, addr = sock.recvfrom(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.debug("recvfrom (listener): %s", exc)
                continue
            self.core.receive_datagram(data, (addr[0], addr[1]), now)
        self.flush()

    def send_datagrams(self, datagrams: list[bytes], addr: Endpoint) -> None:
        """Send a batch of datagrams to one endpoint: with UDP_SEGMENT, runs of equal size (the last
        of a run may be shorter; at most 64 datagrams and 65507 bytes, or the kernel refuses the whole
        run) in one system call each; otherwise one ``sendto`` each."""
        if not self.gso or len(datagrams) < 2:
            self._send_all([(d, addr, 0) for d in datagrams])
            return
        for i, j in gso_runs([len(d) for d in datagrams]):
            if j - i == 1:
                self._send_all([(datagrams[i], addr, 0)])
            else:
                self._send_run(datagrams[i:j], len(datagrams[i]), addr)

    def _send_run(self, run: list[bytes], size: int, addr: Endpoint) -> None:
        try:
            send_segments(self.sock, run, size, addr)  # type: ignore[arg-type]
        except (BlockingIOError, InterruptedError):
            self.send_errors += 1
        except OSError as exc:
            if exc.errno in (errno.EMSGSIZE, errno.EINVAL, errno.EIO):
                self._send_all([(d, addr, 0) for d in run])  # one by one: each error said exactly
            else:
                self.send_errors += 1
                log.debug("sendmsg %s: %s", addr, exc)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self.core.handle_timer(self.loop.time())
        self.flush()

    def flush(self) -> None:
        """Send what the core queued, hand its events on (a handler may call into the core again, so
        this repeats until both are drained), and re-arm the core's timer."""
        core = self.core
        while not self.closed:
            out = core.datagrams_to_send(self.loop.time())
            self._send_all(out)
            event = core.next_event() if self.on_event is not None else None
            if event is None:
                if out:
                    continue  # sending may have queued more (a refused datagram's probes)
                break
            while event is not None and self.on_event is not None:
                self.on_event(event)
                event = core.next_event()
        if self.closed:
            return
        deadline = core.get_timer()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None if deadline is None else self.loop.call_at(deadline, self._fire)
            self._timer_at = deadline

    def _send_all(self, transmits: list[Transmit]) -> None:
        send = self.sock.sendto
        for data, addr, ttl in transmits:
            if type(data) is MayFragment:
                self._send_fragmented(data, addr)
                continue
            try:
                if ttl:
                    self._send_with_ttl(data, addr, ttl)
                else:
                    send(data, addr)
            except (BlockingIOError, InterruptedError):
                self.send_errors += 1  # a full socket buffer drops, as the network would
            except OSError as exc:
                self.send_errors += 1
                log.debug("sendto %s: %s", addr, exc)
                if (
                    exc.errno == errno.EMSGSIZE
                    and self.on_too_big is not None
                    and self.on_too_big(addr, data, self.loop.time())
                ):
                    self._send_fragmented(data, addr)

    def _send_fragmented(self, data: bytes, addr: Endpoint) -> None:
        """Send one datagram with DF off: the socket's mode is switched for this send only (the loop
        runs one callback at a time, so no other send sees it). Two more system calls, for messages
        larger than a path: rare, and never the data plane's."""
        try:
            if not self.df:
                self.sock.sendto(data, addr)
                return
            set_pmtu_discover(self.sock, "dont")
            try:
                self.sock.sendto(data, addr)
            finally:
                set_pmtu_discover(self.sock, "probe")
        except (BlockingIOError, InterruptedError):
            self.send_errors += 1  # a full socket buffer drops, as the network would
        except OSError as exc:
            self.send_errors += 1
            log.debug("sendto %s (fragmented): %s", addr, exc)

    def _send_with_ttl(self, data: bytes, addr: Endpoint, ttl: int) -> None:
        level, option = (
            (socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS)
            if self.sock.family == socket.AF_INET6
            else (socket.IPPROTO_IP, socket.IP_TTL)
        )
        default = self.sock.getsockopt(level, option)
        self.sock.setsockopt(level, option, ttl)
        try:
            self.sock.sendto(data, addr)
        finally:
            self.sock.setsockopt(level, option, default)

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        self.loop.remove_reader(self.sock.fileno())
        for extra in self.listeners:
            self.loop.remove_reader(extra.fileno())
            extra.close()
        if self._timer is not None:
            self._timer.cancel()
        self.sock.close()


def _on(flag: bool) -> str:
    return "on" if flag else "off"
