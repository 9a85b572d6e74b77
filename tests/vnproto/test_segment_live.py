"""The kernel judges vnproto's segmentation and coalescing: segments of the golden GSO frames written to
a plain TAP pass the kernel's checksum checks (and a corrupted one does not), and whole TCP transfers
and UDP bursts between two namespaces arrive intact when the forwarder between their TAPs segments,
coalesces or completes checksums in every combination the node will use."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from ipop.tap import TapDevice
from tests.ipop.nsenter import in_netns
from tests.netns import Lab, wait_for
from tests.vnproto.vnetgolden import gso_vframes
from tests.vnproto.vnetlab import IP6_B, IP_B, MAC_B, TapPair, Transform, expected, expected_udp
from vnproto import NO_OFFLOAD, VNET_HDR_LEN, coalesce, segment

pytestmark = pytest.mark.system


def counters(lab: Lab, ns: str) -> dict[str, int]:
    """The namespace's SNMP counters, as ``Tcp.InSegs``, ``Udp6.Udp6NoPorts`` and so on."""
    out: dict[str, int] = {}
    lines = lab.sh(ns, "cat", "/proc/net/snmp").stdout.splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        proto = names.split(":")[0]
        for k, v in zip(names.split()[1:], values.split()[1:], strict=True):
            out[f"{proto}.{k}"] = int(v)
    for line in lab.sh(ns, "cat", "/proc/net/snmp6").stdout.splitlines():
        k, v = line.split()
        out[f"Udp6.{k}"] = int(v)
    return out


def test_kernel_accepts_every_segment_and_rejects_a_corrupted_one(netlab: Lab) -> None:
    ns = netlab.netns("judge")
    with in_netns(ns):
        tap = TapDevice.open("vn0", mtu=1500, mac=MAC_B)  # plain: the kernel verifies every checksum
    try:
        netlab.addr(ns, "vn0", f"{IP_B}/24")
        netlab.ip(ns, "-6", "addr", "add", f"{IP6_B}/64", "dev", "vn0", "nodad")
        before = counters(netlab, ns)
        tcp = [p for name in ("tcp4", "tcp6") for vf in gso_vframes(name) for p in segment(vf)]
        udp4 = [p for vf in gso_vframes("udp4") for p in segment(vf)]
        udp6 = [p for vf in gso_vframes("udp6") for p in segment(vf)]
        for piece in (*tcp, *udp4, *udp6):
            assert tap.write(bytes(piece[VNET_HDR_LEN:]))
        # No socket listens: every valid TCP segment is answered with a reset, every valid UDP
        # datagram counted as "no port"; a bad checksum would count as InCsumErrors instead.
        wait_for(
            lambda: counters(netlab, ns)["Tcp.OutRsts"] - before["Tcp.OutRsts"] >= len(tcp),
            10,
            "a reset for every segment",
        )
        after = counters(netlab, ns)
        assert after["Tcp.InSegs"] - before["Tcp.InSegs"] == len(tcp) > 100
        assert after["Tcp.InCsumErrors"] == before["Tcp.InCsumErrors"]
        assert after["Udp.NoPorts"] - before["Udp.NoPorts"] == len(udp4) == 4
        assert after["Udp6.Udp6NoPorts"] - before["Udp6.Udp6NoPorts"] == len(udp6) == 4
        assert after["Udp.InCsumErrors"] == before["Udp.InCsumErrors"]
        assert after["Udp6.Udp6InCsumErrors"] == before["Udp6.Udp6InCsumErrors"]

        bad = bytearray(tcp[3][VNET_HDR_LEN:])
        bad[-1] ^= 0x55
        assert tap.write(bytes(bad))
        wait_for(
            lambda: counters(netlab, ns)["Tcp.InCsumErrors"] == after["Tcp.InCsumErrors"] + 1,
            10,
            "the kernel to count the corrupted segment",
        )
    finally:
        tap.close()


def via(src_vnet: bool, dst_vnet: bool, max_frame: int, partial: bool, merge: bool) -> Transform:
    """What the node's data path does to one batch between two TAPs."""

    def forward(frames: list[bytes]) -> Sequence[bytes | bytearray | memoryview]:
        vframes = frames if src_vnet else [NO_OFFLOAD + f for f in frames]
        pieces = [p for vf in vframes for p in segment(vf, max_frame, partial=partial and dst_vnet)]
        if dst_vnet:
            return coalesce(pieces) if merge else pieces
        return [memoryview(p)[VNET_HDR_LEN:] for p in pieces]

    return forward


PATHS = {
    "complete-1514-coalesced": (True, 1514, False, True),
    "partial-1514-coalesced": (True, 1514, True, True),
    "partial-1514-uncoalesced": (True, 1514, True, False),
    "partial-9014-gso-pieces": (True, 9014, True, True),
    "to-a-plain-tap": (False, 0, False, False),
    "narrow-path-to-a-plain-tap": (False, 1200, False, False),
}


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("path", list(PATHS))
def test_tcp_transfer_arrives_intact(netlab: Lab, path: str, v6: bool) -> None:
    dst_vnet, max_frame, partial, merge = PATHS[path]
    pair = TapPair(netlab, offload_a=True, offload_b=dst_vnet)
    try:
        size = 3_000_000
        got, counts = pair.transfer(
            via(True, dst_vnet, max_frame, partial, merge),
            via(dst_vnet, True, max_frame, partial, merge),
            size,
            v6=v6,
        )
        assert got == expected(size)
        assert counts["refused"] == 0
        if merge:
            assert counts["ab_out"] < counts["ab_in"] * 8  # merged back: far fewer writes than segments
    finally:
        pair.close()


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("dst_vnet", [False, True], ids=["to-plain", "to-offloading"])
def test_udp_gso_burst_arrives_as_the_sent_datagrams(netlab: Lab, v6: bool, dst_vnet: bool) -> None:
    pair = TapPair(netlab, offload_a=True, offload_b=dst_vnet)
    try:
        fwd = via(True, dst_vnet, 1514, True, True)
        back = via(dst_vnet, True, 1514, True, True)
        got, counts = pair.udp_burst(fwd, back, 1200, 30_000, v6=v6)
        assert got == expected_udp(1200, 30_000)
        assert counts["refused"] == 0
    finally:
        pair.close()
