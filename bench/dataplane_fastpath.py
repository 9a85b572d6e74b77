"""I/O. Micro-benchmark of one 64 KiB TCP super-frame through the node's whole Python data path, one
thread, no system calls: the sender's ``ipop.fastpath.FastPath.tap_vframes`` (cut to the link, sealed by
the overlay's ``DataPath.seal_direct`` with a real session) and the receiver's ``DataPath.receive`` of
every datagram (``DataPath.receive_many`` of the super-frame's datagrams at once, as one UDP_GRO
read brings them, where it exists) plus ``FastPath.end_batch`` (opened, checked, merged into TAP
frames; the TAP write is a no-op that keeps nothing).

Two real overlay cores are linked by a handshake in simulated time and two real virtual-network cores
(the test harness's) hold the addresses; the receiving core's route for the sender's address is
pointed at the sending overlay node, as the DHT lookup would. Prints one JSON object: per link limit
(1440: a 1500-byte underlay; 65475: a 65535-byte one, the whole frame in one datagram) the datagrams
per super-frame and the median and minimum of 7 repeats, in microseconds of this thread's CPU time
(``time.thread_time``: time the machine gave to other processes is not counted, so the figures hold
on a shared machine) per super-frame, for each side. Run:
``PYTHONPATH=. python -m bench.dataplane_fastpath`` (the figures of ``docs/dataplane.md``, phase 5).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from random import Random
from typing import Any

from ipop.fastpath import FastPath
from overlay import Address, Service
from tests.ipop.test_vnet_core import ping_frame, two_members
from tests.ipop.vnet_harness import Net
from tests.overlay.test_datapath import EA, Pair
from tests.vnproto.checkframes import build_gso

REPEAT = 7
FRAMES = 150
"""Super-frames per repeat (each repeat needs fresh datagrams: the replay window opens each once)."""
MSS = 1448


class OverlayLinks:
    """The DirectLinks seam over node a's real DataPath; the sealed datagrams are kept for node b."""

    def __init__(self, pair: Pair, limit: int) -> None:
        self.pair = pair
        self.limit = limit
        self.datagrams: list[bytes] = []

    def direct_limit(self, dest: Address) -> int:
        return self.limit

    def send_direct(
        self, dest: Address, service: int, payloads: list[bytes | memoryview], prefixed: bool = False
    ) -> bool:
        pair = self.pair
        if prefixed:
            sealed = pair.a.datapath.seal_direct(pair.b.address, service, payloads, pair.now, prefixed=True)
        else:  # the branches before the prefixed payloads (phase 6) have no such argument
            sealed = pair.a.datapath.seal_direct(pair.b.address, service, payloads, pair.now)
        if sealed is None:
            return False
        self.datagrams += sealed[1]
        return True


def measure(limit: int) -> dict[str, Any]:
    pair = Pair(65535).linked()
    net = Net()
    site_a, ip_a, site_b, ip_b = two_members(net)
    site_a.frame(ping_frame(site_a, ip_a, ip_b))  # a learns who holds b's address
    net.run(2)
    site_b.core.mapping.routes[ip_a.packed] = pair.a.address  # b's lookup, as the overlay sees it
    links = OverlayLinks(pair, limit)
    writes: list[int] = []
    sender = FastPath(
        site_a.core, links, tap_offload=True, write_vframe=lambda v: None, write_frame=lambda f: None
    )
    receiver = FastPath(
        site_b.core, links, tap_offload=True, write_vframe=lambda v: writes.append(len(v)), write_frame=len
    )
    datapath = pair.b.datapath
    datapath.receivers[Service.IPOP] = receiver
    set_sink = getattr(datapath, "set_sink", None)  # absent before phase 5: then app_message
    if set_sink is not None:
        set_sink(Service.IPOP, receiver)
    data = Random(1).randbytes(45 * MSS)
    vf = build_gso(data, MSS, addresses=(ip_a.packed, ip_b.packed), options=b"\x01\x01\x08\x0a" + bytes(8))
    sender.tap_vframes([vf], pair.now)
    first = links.datagrams
    pair.b.receive_datagram(first[0], EA, pair.now)  # teaches b's data path the session
    for datagram in first[1:]:
        datapath.receive(datagram, EA, pair.now)
    receiver.end_batch()
    per_frame = len(first)
    send_us: list[float] = []
    recv_us: list[float] = []
    for _ in range(REPEAT):
        links.datagrams = []
        t0 = time.thread_time()
        for _ in range(FRAMES):
            sender.tap_vframes([vf], pair.now)
        send_us.append((time.thread_time() - t0) / FRAMES * 1e6)
        batches = [links.datagrams[i : i + per_frame] for i in range(0, len(links.datagrams), per_frame)]
        writes.clear()
        end = receiver.end_batch
        now = pair.now
        many = getattr(datapath, "receive_many", None)  # absent before phase 5: one call each
        t0 = time.thread_time()
        if many is not None:
            for batch in batches:
                many(batch, EA, now)
                end()
        else:
            receive = datapath.receive
            for batch in batches:
                for datagram in batch:
                    receive(datagram, EA, now)
                end()
        recv_us.append((time.thread_time() - t0) / FRAMES * 1e6)
        if len(writes) != FRAMES or sum(writes) != FRAMES * len(vf):
            raise RuntimeError(f"the receiver wrote {len(writes)} frames, {sum(writes)} bytes")
    return {
        "datagrams_per_frame": per_frame,
        "send_us": {"median": round(statistics.median(send_us), 1), "min": round(min(send_us), 1)},
        "receive_us": {"median": round(statistics.median(recv_us), 1), "min": round(min(recv_us), 1)},
    }


def main() -> int:
    out: dict[str, Any] = {"python": sys.version.split()[0], "frame_payload": 45 * MSS}
    for limit in (1440, 65475):
        out[f"limit_{limit}"] = measure(limit)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
