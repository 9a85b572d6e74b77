"""The receive buffer sized in time (overlay.rxbuffer), and a real driver resizing its socket by it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from itertools import pairwise
from pathlib import Path

import pytest

from overlay.driver import RECEIVE_BUFFER, UdpDriver, open_udp_socket
from overlay.events import OverlayEvent, Transmit
from overlay.rxbuffer import CEILING, FLOOR, HALF_LIFE_S, QUEUE_S, WINDOW_S, ReceiveBufferSizer

MB = 1 << 20


def feed(
    sizer: ReceiveBufferSizer, rate: float, seconds: float, *, start: float = 0.0, total: int = 0
) -> tuple[list[int], float, int]:
    """Read at ``rate`` bytes/s for ``seconds`` in windows of WINDOW_S: the sizes proposed, and the
    time and byte count reached."""
    proposed: list[int] = []
    now = start
    sizer.update(now, total)
    steps = round(seconds / WINDOW_S)
    for _ in range(steps):
        now += WINDOW_S
        total += int(rate * WINDOW_S)
        size = sizer.update(now, total)
        if size is not None:
            proposed.append(size)
    return proposed, now, total


def test_a_quiet_node_keeps_the_floor() -> None:
    sizer = ReceiveBufferSizer()
    proposed, _, _ = feed(sizer, 1_000_000, 5)  # 8 Mbit/s: 5 ms of it is 5 kB
    assert proposed == []
    assert sizer.size == FLOOR


@pytest.mark.parametrize("gbps", [1.5, 3.0])
def test_the_buffer_holds_the_target_time_of_the_rate_read(gbps: float) -> None:
    rate = gbps * 1e9 / 8
    sizer = ReceiveBufferSizer()
    proposed, _, _ = feed(sizer, rate, 1)
    assert len(proposed) == 1  # one setsockopt for the new regime, not one per window
    assert proposed[0] == sizer.size == pytest.approx(rate * QUEUE_S, rel=0.01)


def test_the_ceiling_bounds_what_is_asked_of_the_kernel() -> None:
    sizer = ReceiveBufferSizer()
    proposed, _, _ = feed(sizer, 20e9 / 8, 1)
    assert proposed == [CEILING]


def test_a_burst_of_one_window_is_remembered_and_fades_with_the_half_life() -> None:
    sizer = ReceiveBufferSizer()
    _, now, total = feed(sizer, 400 * MB, WINDOW_S)
    assert sizer.size == pytest.approx(400 * MB * QUEUE_S, rel=0.01)
    # Quiet afterwards: the size halves about every half-life, in steps a quarter apart at least.
    proposed, now, total = feed(sizer, 0, HALF_LIFE_S, start=now, total=total)
    assert proposed and all(b < a * 0.8 for a, b in pairwise([400 * MB * QUEUE_S, *proposed]))
    assert sizer.size == pytest.approx(200 * MB * QUEUE_S, rel=0.3)
    proposed, _, _ = feed(sizer, 0, 10 * HALF_LIFE_S, start=now, total=total)
    assert proposed[-1] == FLOOR == sizer.size


def test_nothing_changes_within_a_window_or_below_a_quarter() -> None:
    sizer = ReceiveBufferSizer()
    _, now, total = feed(sizer, 200 * MB, 0.5)
    size = sizer.size
    assert sizer.update(now + WINDOW_S / 2, total + 10 * MB) is None  # too soon to measure
    assert not sizer.due(now + WINDOW_S / 2) and sizer.due(now + WINDOW_S)
    proposed, _, _ = feed(sizer, 230 * MB, 1, start=now, total=total)  # 15 % more: left alone
    assert proposed == [] and sizer.size == size


def test_a_counter_that_restarts_is_a_new_first_reading() -> None:
    sizer = ReceiveBufferSizer()
    _, now, _ = feed(sizer, 300 * MB, 0.5)
    assert sizer.update(now + 1, 5) is None  # no negative rate, no crash


def test_nonsense_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="floor"):
        ReceiveBufferSizer(floor=0)
    with pytest.raises(ValueError, match="floor"):
        ReceiveBufferSizer(floor=2 * MB, ceiling=MB)
    with pytest.raises(ValueError, match="queue_s"):
        ReceiveBufferSizer(queue_s=0)


class SilentCore:
    """A core that takes datagrams and never sends: only the driver's socket is under test."""

    def __init__(self) -> None:
        self.received = 0

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        self.received += 1

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        return []

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def next_event(self) -> OverlayEvent | None:
        return None


async def test_a_driver_grows_its_sockets_receive_buffer_with_the_rate_it_reads() -> None:
    """Real sockets on loopback: the socket starts at the floor; after a stream of datagrams the
    kernel reports the larger buffer the sizer asked for, and the status shows it and the rate."""
    loop = asyncio.get_running_loop()
    rx = open_udp_socket("127.0.0.1", 0)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    core = SilentCore()
    driver = UdpDriver(core, rx, fast=True)
    # With a second of queue the buffer grows past the floor at 160 kB/s: any machine reads loopback faster.
    driver.rx_buffer = ReceiveBufferSizer(queue_s=1.0)
    try:
        assert rx.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * RECEIVE_BUFFER
        tx.setblocking(False)
        tx.connect(rx.getsockname())
        payload = b"\xa5" * 1200
        deadline = loop.time() + 20
        while driver.rx_buffer.size == FLOOR:
            assert loop.time() < deadline, "the receive buffer never grew"
            for _ in range(50):
                try:
                    tx.send(payload)
                except BlockingIOError:
                    break
            await asyncio.sleep(0)  # the driver reads
        status = driver.status()
        assert status["rx_buffer"] == 2 * driver.rx_buffer.size > 2 * FLOOR
        assert status["rx_bytes"] == driver.rx_bytes > 0 and core.received > 0
        assert status["rx_peak_bytes_per_s"] and status["rx_peak_bytes_per_s"] > FLOOR
        assert status["rx_dropped"] is not None and status["rx_dropped"] >= 0
    finally:
        driver.close()
        tx.close()


def rmem_max() -> int:
    return int(Path("/proc/sys/net/core/rmem_max").read_text())


@pytest.mark.skipif(os.geteuid() != 0, reason="SO_RCVBUFFORCE needs CAP_NET_ADMIN")
async def test_a_node_run_as_root_sizes_its_buffer_past_the_kernels_cap() -> None:
    """A stock kernel caps SO_RCVBUF at net.core.rmem_max (208 KiB): a node, root for its TAP
    device, asks with SO_RCVBUFFORCE, so its own ceiling is what bounds the buffer."""
    cap = rmem_max()
    loop = asyncio.get_running_loop()
    rx = open_udp_socket("127.0.0.1", 0)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    driver = UdpDriver(SilentCore(), rx, fast=True)
    driver.rx_buffer = ReceiveBufferSizer(queue_s=1000.0, ceiling=2 * cap)  # any traffic asks the ceiling
    try:
        tx.setblocking(False)
        tx.connect(rx.getsockname())
        deadline = loop.time() + 20
        while driver.rx_buffer.size != 2 * cap:
            assert loop.time() < deadline, "the sizer never asked for its ceiling"
            with contextlib.suppress(BlockingIOError):
                tx.send(b"\x5a" * 1200)
            await asyncio.sleep(0.01)
        assert driver.status()["rx_buffer"] == 2 * (2 * cap)  # the kernel's doubling, past its cap
    finally:
        driver.close()
        tx.close()
