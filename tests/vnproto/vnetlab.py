"""Test support: two namespaces, each with a real TAP device (with or without offloads), joined by a
forwarder in this process that reads frames from one TAP and writes them, transformed, to the other.

It is the smallest setting in which the kernel both produces and consumes virtio frames: a TCP or UDP
program in namespace A talks to one in namespace B through the two TAPs, so whatever the forwarder
does to the frames (segmenting, coalescing, completing checksums) is judged by the receiving kernel
and, in the end, by the bytes the receiving program got. Used by the golden capture script and the
live segmentation tests.
"""

from __future__ import annotations

import hashlib
import select
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ipop.tap import TapDevice
from tests.ipop.nsenter import in_netns
from tests.netns import Lab, Process, wait_for

MAC_A = bytes.fromhex("020000009901")
MAC_B = bytes.fromhex("020000009902")
IP_A, IP_B = "10.99.0.1", "10.99.0.2"
IP6_A, IP6_B = "fd00:99::1", "fd00:99::2"
PORT = 5999

Transform = Callable[[list[bytes]], Sequence[bytes | bytearray | memoryview]]

PATTERN = bytes(range(256)) * 64
"""What the sender sends, repeated: any lost, duplicated or misplaced byte changes the digest."""


def pattern(size: int) -> bytes:
    reps = size // len(PATTERN) + 1
    return (PATTERN * reps)[:size]


SINK = """
import hashlib, socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print('listening', flush=True)
c, _ = s.accept()
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    h.update(b)
    n += len(b)
print(n, h.hexdigest(), flush=True)
"""

SOURCE = """
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
size = int(sys.argv[3])
data = (bytes(range(256)) * 64 * (size // 16384 + 1))[:size]
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
c.sendall(data)
c.shutdown(socket.SHUT_WR)
c.recv(1)
c.close()
print('sent', size, flush=True)
"""

UDP_SINK = """
import hashlib, socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(30)
print('listening', flush=True)
h, sizes = hashlib.sha256(), []
for _ in range(int(sys.argv[3])):
    b = s.recv(65535)
    h.update(b)
    sizes.append(len(b))
print(len(sizes), sum(sizes), h.hexdigest(), flush=True)
"""

UDP_SOURCE = """
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
seg, size = int(sys.argv[3]), int(sys.argv[4])
data = (bytes(range(256)) * (size // 256 + 1))[:size]
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, seg)  # UDP_SEGMENT: one send, size // seg datagrams
s.sendto(data, (sys.argv[1], int(sys.argv[2])))
print('sent', flush=True)
"""


@dataclass
class TapPair:
    """Namespaces ``a`` and ``b`` of ``lab``, each with TAP ``vn0``; IPv4 and IPv6 addresses set, MACs
    fixed and the neighbours known (no ARP or neighbour discovery through the forwarder needed)."""

    lab: Lab
    offload_a: bool
    offload_b: bool
    mtu: int = 1500
    a: str = ""
    b: str = ""
    tap_a: TapDevice = field(init=False)
    tap_b: TapDevice = field(init=False)

    def __post_init__(self) -> None:
        self.a, self.b = self.lab.netns("vna"), self.lab.netns("vnb")
        with in_netns(self.a):
            self.tap_a = TapDevice.open("vn0", mtu=self.mtu, mac=MAC_A, offload=self.offload_a)
        with in_netns(self.b):
            self.tap_b = TapDevice.open("vn0", mtu=self.mtu, mac=MAC_B, offload=self.offload_b)
        for ns, ip, ip6, peer, peer6, mac in (
            (self.a, IP_A, IP6_A, IP_B, IP6_B, MAC_B),
            (self.b, IP_B, IP6_B, IP_A, IP6_A, MAC_A),
        ):
            self.lab.addr(ns, "vn0", f"{ip}/24")
            self.lab.ip(ns, "-6", "addr", "add", f"{ip6}/64", "dev", "vn0", "nodad")
            hw = ":".join(f"{x:02x}" for x in mac)
            self.lab.ip(ns, "neigh", "replace", peer, "lladdr", hw, "dev", "vn0", "nud", "permanent")
            self.lab.ip(ns, "-6", "neigh", "replace", peer6, "lladdr", hw, "dev", "vn0", "nud", "permanent")

    def close(self) -> None:
        self.tap_a.close()
        self.tap_b.close()

    def pump(
        self,
        done: Callable[[], bool],
        a_to_b: Transform,
        b_to_a: Transform,
        timeout: float = 60.0,
        record: list[tuple[str, bytes]] | None = None,
    ) -> dict[str, int]:
        """Forward frames both ways until ``done()`` holds (checked between batches), failing after
        ``timeout``. Returns counters: frames read and written per direction and refused writes."""
        counts = {"ab_in": 0, "ab_out": 0, "ba_in": 0, "ba_out": 0, "refused": 0}
        deadline = time.monotonic() + timeout
        fa, fb = self.tap_a.fileno(), self.tap_b.fileno()
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"traffic through the TAP pair did not finish in {timeout} s: {counts}")
            ready, _, _ = select.select([fa, fb], [], [], 0.05)
            for fd in ready:
                src, dst, fn, key = (
                    (self.tap_a, self.tap_b, a_to_b, "ab")
                    if fd == fa
                    else (self.tap_b, self.tap_a, b_to_a, "ba")
                )
                frames = src.read_many(64)
                counts[key + "_in"] += len(frames)
                if record is not None:
                    record.extend((key, f) for f in frames)
                for out in fn(frames):
                    counts[key + "_out"] += 1
                    if not dst.write(bytes(out)):
                        counts["refused"] += 1
        return counts

    def transfer(
        self, a_to_b: Transform, b_to_a: Transform, size: int, v6: bool = False, **kw: object
    ) -> tuple[str, dict[str, int]]:
        """Send ``size`` bytes of :data:`PATTERN` over TCP from A to B through the forwarder; return
        what B's program printed (``"<bytes> <sha256>"``) and the forwarder's counters."""
        dst = IP6_B if v6 else IP_B
        sink = self.lab.start("sink", [sys.executable, "-c", SINK, dst, str(PORT)], ns=self.b)
        wait_line(sink, "listening")
        source = self.lab.start(
            "source", [sys.executable, "-c", SOURCE, dst, str(PORT), str(size)], ns=self.a
        )
        counts = self.pump(lambda: not sink.alive(), a_to_b, b_to_a, **kw)  # type: ignore[arg-type]
        source.stop()
        return sink.stdout().strip().splitlines()[-1], counts

    def udp_burst(
        self, a_to_b: Transform, b_to_a: Transform, seg: int, size: int, v6: bool = False, **kw: object
    ) -> tuple[str, dict[str, int]]:
        """One ``UDP_SEGMENT`` send of ``size`` bytes in datagrams of ``seg`` from A to B; return what
        B's program printed (``"<datagrams> <bytes> <sha256>"``) and the forwarder's counters."""
        dst = IP6_B if v6 else IP_B
        count = -(-size // seg)
        sink = self.lab.start(
            "usink", [sys.executable, "-c", UDP_SINK, dst, str(PORT), str(count)], ns=self.b
        )
        wait_line(sink, "listening")
        self.lab.start(
            "usource", [sys.executable, "-c", UDP_SOURCE, dst, str(PORT), str(seg), str(size)], ns=self.a
        )
        counts = self.pump(lambda: not sink.alive(), a_to_b, b_to_a, **kw)  # type: ignore[arg-type]
        return sink.stdout().strip().splitlines()[-1], counts


def wait_line(proc: Process, text: str, timeout: float = 10.0) -> None:
    def said() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} ended: {proc.stdout()} {proc.stderr()}")
        return text in proc.stdout()

    wait_for(said, timeout, f"{proc.name} to say {text!r}")


def expected(size: int) -> str:
    return f"{size} {hashlib.sha256(pattern(size)).hexdigest()}"


def expected_udp(seg: int, size: int) -> str:
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    return f"{-(-size // seg)} {size} {hashlib.sha256(data).hexdigest()}"


def unchanged(frames: list[bytes]) -> list[bytes]:
    return frames
