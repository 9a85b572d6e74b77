"""The UDP socket options on real sockets in two lab namespaces joined by a veth pair: DF probing
refuses what the interface cannot carry, the kernel's path MTU is readable, UDP_SEGMENT sends many
datagrams with one call, and UDP_GRO batches split back into exactly the datagrams that were sent."""

from __future__ import annotations

import errno
import select
import socket

import pytest

from overlay.driver import RECEIVE_BUFFER, open_udp_socket
from overlay.udpopts import (
    UDP_MAX_GSO_BYTES,
    UDP_MAX_SEGMENTS,
    enable_gro,
    gso_runs,
    gso_supported,
    path_mtu,
    recv_gro,
    send_segments,
    set_pmtu_discover,
)
from tests.ipop.nsenter import in_netns
from tests.netns import Lab

pytestmark = pytest.mark.system

A, B = "10.98.0.1", "10.98.0.2"


def pair(lab: Lab, mtu: int = 1500) -> tuple[socket.socket, socket.socket]:
    """A UDP socket in namespace a connected to one in namespace b, across a veth of ``mtu``."""
    na, nb = lab.netns("ua"), lab.netns("ub")
    lab.veth(na, "u0", nb, "u1", mtu=mtu)
    lab.addr(na, "u0", f"{A}/24")
    lab.addr(nb, "u1", f"{B}/24")
    with in_netns(nb):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind((B, 0))
    with in_netns(na):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.bind((A, 0))
    tx.connect(rx.getsockname())
    rx.setblocking(False)
    return tx, rx


def drain(rx: socket.socket, want: int, gro: bool = False, reads: list[int] | None = None) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < want:
        ready, _, _ = select.select([rx], [], [], 5)
        assert ready, f"only {len(got)} of {want} datagrams arrived"
        if gro:
            parts, _addr = recv_gro(rx)
            if reads is not None:
                reads.append(len(parts))
            got.extend(bytes(p) for p in parts)
        else:
            got.append(rx.recv(65535))
    return got


def test_probe_mode_refuses_what_the_interface_cannot_carry(netlab: Lab) -> None:
    tx, rx = pair(netlab, mtu=1500)
    try:
        assert path_mtu(tx) == 1500
        set_pmtu_discover(tx, "probe")
        tx.send(bytes(1472))
        with pytest.raises(OSError) as refused:
            tx.send(bytes(1473))
        assert refused.value.errno == errno.EMSGSIZE
        set_pmtu_discover(tx, "dont")
        tx.send(bytes(3000))  # fragmented by the kernel: what the overlay must never do
        assert [len(d) for d in drain(rx, 2)] == [1472, 3000]
        with in_netns(netlab.namespaces[0]):
            lone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with lone:
            assert path_mtu(lone) is None
    finally:
        tx.close()
        rx.close()


def test_gso_send_arrives_as_separate_datagrams(netlab: Lab) -> None:
    tx, rx = pair(netlab)
    try:
        assert gso_supported(tx)
        datagrams = [bytes([i]) * 1000 for i in range(9)] + [b"\xff" * 300]
        assert send_segments(tx, list(datagrams), 1000) == 9300
        assert drain(rx, 10) == datagrams  # no GRO on the receiver: the kernel splits them
        with pytest.raises(ValueError):
            send_segments(tx, [b"x"] * (UDP_MAX_SEGMENTS + 1), 1)
    finally:
        tx.close()
        rx.close()


def test_gro_batches_split_back_into_the_sent_datagrams(netlab: Lab) -> None:
    tx, rx = pair(netlab)
    try:
        assert enable_gro(rx)
        datagrams = [bytes([i]) * 1200 for i in range(40)] + [b"\xee" * 77]
        send_segments(tx, list(datagrams), 1200)
        tx.send(b"single")
        reads: list[int] = []
        got = drain(rx, 42, gro=True, reads=reads)
        assert got == [*datagrams, b"single"]
        assert max(reads) > 1 and len(reads) < 42  # the kernel did batch, and the batches were split
    finally:
        tx.close()
        rx.close()


def test_gso_runs_respect_the_kernels_count_and_byte_limits() -> None:
    assert gso_runs([]) == []
    assert gso_runs([1000] * 9 + [300]) == [(0, 10)]
    assert gso_runs([5] * 70) == [(0, UDP_MAX_SEGMENTS), (UDP_MAX_SEGMENTS, 70)]
    per_send = UDP_MAX_GSO_BYTES // 1472  # 44
    runs = gso_runs([1472] * 45 + [900])  # a 64 KiB super-frame cut to a 1500-byte path
    assert runs == [(0, per_send), (per_send, 46)]
    assert all(sum([1472] * (j - i)) <= UDP_MAX_GSO_BYTES for i, j in runs)
    assert gso_runs([1472] * 44 + [300]) == [(0, 44), (44, 45)]  # the short one would overflow
    assert gso_runs([100, 200, 200, 50]) == [(0, 1), (1, 4)]  # a longer one starts a new run


def test_one_gso_send_carries_at_most_65507_bytes(netlab: Lab) -> None:
    """Why :func:`gso_runs` counts bytes: the kernel refuses a larger batch whole."""
    tx, rx = pair(netlab)
    try:
        set_pmtu_discover(tx, "probe")
        with pytest.raises(OSError) as refused:
            send_segments(tx, [bytes(1472)] * 45, 1472)
        assert refused.value.errno == errno.EMSGSIZE
        datagrams = [bytes([i]) * 1472 for i in range(45)] + [b"\xee" * 900]
        for i, j in gso_runs([len(d) for d in datagrams]):
            send_segments(tx, datagrams[i:j], 1472)
        assert drain(rx, 46) == datagrams
    finally:
        tx.close()
        rx.close()


def test_a_nodes_socket_queues_a_bounded_burst_and_drops_the_rest(netlab: Lab) -> None:
    """The receive buffer is the tunnel's queue when the node falls behind (phase 4 of
    docs/dataplane.md): a burst far larger than it is dropped by the kernel, not held for later."""
    na, nb = netlab.netns("ua"), netlab.netns("ub")
    netlab.veth(na, "u0", nb, "u1", mtu=1500)
    netlab.addr(na, "u0", f"{A}/24")
    netlab.addr(nb, "u1", f"{B}/24")
    with in_netns(nb):
        rx = open_udp_socket(B, 0)
    with in_netns(na):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.bind((A, 0))
    try:
        tx.connect(rx.getsockname())
        assert rx.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * RECEIVE_BUFFER
        sent = 0
        while sent < 16 * RECEIVE_BUFFER:  # nobody reads meanwhile
            sent += tx.send(b"\x5a" * 1400)
        got = 0
        while True:
            try:
                got += len(rx.recv(65535))
            except BlockingIOError:
                break
        assert 0 < got <= 2 * RECEIVE_BUFFER < sent
        assert got <= 512 << 10  # ~8 ms at 0.5 Gbit/s: the queue the tunnel may add, at most
    finally:
        tx.close()
        rx.close()
