"""The virtual network's offload fast path (``ipop.fastpath``) between two real cores on a scripted DHT
ring: TCP super-frames sent whole or cut to the link's limit, merged back for an offloading TAP or
written as plain segments with complete checksums, ICMP "fragmentation needed" for DF packets that do
not fit, a peer's bad virtio header refused, and the ordinary path for everything else."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from ipop.fastpath import FastPath
from overlay import Address, Service, app_prefix
from tests.ipop.test_vnet_core import icmp_in, ping_frame, two_members
from tests.ipop.vnet_harness import Net, Site
from tests.vnproto.checkframes import build_gso, parse
from vnproto import NO_OFFLOAD, IcmpType, complete_checksum, segment

MSS = 1179


class Links:
    """The DirectLinks seam: a direct link of ``limit`` bytes from one fast path to the other's."""

    def __init__(self, src: Address, limit: int) -> None:
        self.src = src
        self.limit = limit
        self.peer: FastPath | None = None
        self.sink = False
        """Deliver as the overlay's data path does to a sink: decrypted into the peer's room."""
        self.datagrams: list[int] = []

    def direct_limit(self, dest: Address) -> int:
        return self.limit

    def send_direct(self, dest: Address, service: int, payloads: list[bytes], prefixed: bool = False) -> bool:
        if self.peer is None:
            return False
        if prefixed:
            assert all(bytes(p[:2]) == app_prefix(service) for p in payloads)
            payloads = [p[2:] for p in payloads]
        for payload in payloads:
            assert len(payload) <= self.limit
            self.datagrams.append(len(payload))
            plaintext = bytes((1, service)) + payload
            at = self.peer.room(len(plaintext)) if self.sink else -1
            if at < 0:
                self.peer.app_message(self.src, plaintext, 0.0)
                continue
            self.peer.view[at : at + len(plaintext)] = plaintext
            self.peer.opened(self.src, len(plaintext), 0.0)
        self.peer.end_batch()
        return True


class Side:
    def __init__(self, site: Site, limit: int, offload: bool) -> None:
        self.site = site
        self.vframes: list[bytes] = []
        self.frames: list[bytes] = []
        self.links = Links(site.address, limit)
        self.fast = FastPath(
            site.core,
            self.links,
            tap_offload=offload,
            write_vframe=lambda vf: self.vframes.append(bytes(vf)),
            write_frame=self.frames.append,
        )


def pair(
    limit: int, offload_b: bool = True, sink: bool = False
) -> tuple[Net, Side, IPv4Address, Side, IPv4Address]:
    net = Net()
    a, ip_a, b, ip_b = two_members(net)
    a.frame(ping_frame(a, ip_a, ip_b))  # both learn who holds the other's address
    net.run(2)
    b.frame(ping_frame(b, ip_b, ip_a))
    net.run(2)
    a.take(), b.take()
    a.sent.clear()
    side_a, side_b = Side(a, limit, True), Side(b, limit, offload_b)
    side_a.links.peer = side_b.fast
    side_a.links.sink = sink
    return net, side_a, ip_a, side_b, ip_b


def single(vframe: bytes) -> bytes:
    """``vframe`` as one packet with a complete checksum (no GSO), as a TAP hands over small ones."""
    vf = bytearray(vframe)
    vf[1:6] = bytes(5)  # no GSO type, header length or segment size
    return bytes(complete_checksum(vf))


def payload_of(vframes: list[bytes]) -> bytes:
    """The TCP payload of what was written, every piece with correct IP and TCP checksums."""
    out = b""
    for vf in vframes:
        for piece in segment(vf):
            parsed = parse(piece)
            assert parsed.ip_ok() and parsed.l4_checksum_ok()
            out += parsed.payload
    return out


@pytest.mark.parametrize(
    ("limit", "offload_b", "sink"),
    [
        (65000, True, False),
        (1440, True, False),
        (1440, False, False),
        (9000, False, False),
        (65000, True, True),
        (1440, True, True),
        (9000, True, True),
    ],
)
def test_a_super_frame_arrives_whole_with_correct_checksums(limit: int, offload_b: bool, sink: bool) -> None:
    net, a, ip_a, b, ip_b = pair(limit, offload_b, sink)
    data = bytes(range(256)) * 235  # 60,160 bytes: 52 segments
    vf = build_gso(data, MSS, addresses=(ip_a.packed, ip_b.packed))
    received = b.site.core.receiver.rx_packets
    a.fast.tap_vframes([vf], net.ring.now)
    pieces = len(a.links.datagrams)
    assert pieces == 1 if limit == 65000 else pieces > 1
    assert a.fast.tx_direct == 1 and a.fast.tx_pieces == pieces and not a.site.sent
    if offload_b:
        assert len(b.vframes) == 1  # merged back into one write
        assert payload_of(b.vframes) == data
    else:
        assert not b.vframes and len(b.frames) == 52  # a plain TAP gets one segment per write
        assert payload_of([NO_OFFLOAD + f for f in b.frames]) == data
        assert all(f[:12] == b.site.mac + b.site.core.remote_mac for f in b.frames)
    assert b.site.core.receiver.rx_packets - received == pieces
    assert b.fast.status()["rx_writes"] == (1 if offload_b else 52)


def test_a_df_packet_too_big_for_the_link_gets_fragmentation_needed() -> None:
    net, a, ip_a, _b, ip_b = pair(1000)
    udp = single(build_gso(bytes(1300), 1300, udp=True, addresses=(ip_a.packed, ip_b.packed)))
    a.fast.tap_vframes([udp], net.ring.now)
    assert not a.links.datagrams
    ((packet, icmp, _frame),) = icmp_in(a.frames)
    assert icmp.type == IcmpType.DEST_UNREACHABLE and icmp.code == 4
    assert int.from_bytes(icmp.rest[2:4], "big") == 1000 - 15
    assert packet.dst == ip_a
    assert a.site.core.counters["frag_needed_sent"] == 1


def test_a_bad_virtio_header_from_a_peer_is_refused() -> None:
    _net, a, ip_a, b, ip_b = pair(65000)
    vf = bytearray(build_gso(bytes(3000), MSS, addresses=(ip_a.packed, ip_b.packed)))
    vf[0] = 0x20  # an unknown flag
    packet = bytes(vf[:10]) + bytes(vf[24:])
    header = b.fast._vnet  # what a peer puts before it
    b.fast.app_message(a.site.address, bytes((1, Service.IPOP)) + header + packet, 0.0)
    b.fast.end_batch()
    assert not b.vframes and b.fast.dropped == 1


def test_frames_off_the_fast_path_take_the_cores_path_as_plain_frames() -> None:
    net, a, ip_a, _b, ip_b = pair(1440)
    syn = single(build_gso(b"", MSS, flags=0x02, addresses=(ip_a.packed, ip_b.packed)))  # MSS clamping
    stranger = build_gso(bytes(3000), MSS, addresses=(ip_a.packed, IPv4Address("10.250.99.99").packed))
    a.fast.tap_vframes([syn, stranger], net.ring.now)
    assert not a.links.datagrams and a.fast.tx_direct == 0
    sent = [payload for dest, service, payload in a.site.sent if service == Service.IPOP]
    assert len(sent) == 1  # the SYN, to b's node; the stranger waits for its lookup as plain segments
    assert a.site.core.mapping.entries[IPv4Address("10.250.99.99").packed].waiting


def test_plain_frames_go_in_one_batch_per_holder_and_too_big_ones_get_icmp() -> None:
    net, a, ip_a, b, ip_b = pair(1000)
    small = [ping_frame(a.site, ip_a, ip_b, seq=i) for i in range(5)]
    big = ping_frame(a.site, ip_a, ip_b, seq=9, size=1200)  # DF set, more than the link carries
    a.fast.tap_frames([*small, big], net.ring.now)
    assert len(a.links.datagrams) == 5 and a.fast.tx_direct == 5 and not a.site.sent
    assert len(icmp_in(a.frames)) == 1  # fragmentation needed, for the big one
    echoes = icmp_in((b.vframes and [v[10:] for v in b.vframes]) or b.frames)
    assert [icmp.type for _, icmp, _ in echoes] == [IcmpType.ECHO_REQUEST] * 5


def test_decrypted_in_place_packets_off_the_fast_path_and_bad_headers_are_handled_as_before() -> None:
    _net, a, ip_a, b, ip_b = pair(65000, sink=True)
    vf = bytearray(build_gso(bytes(3000), MSS, addresses=(ip_a.packed, ip_b.packed)))
    vf[0] = 0x20  # an unknown flag
    a.links.send_direct(b.site.address, Service.IPOP, [b.fast._vnet + bytes(vf[:10]) + bytes(vf[24:])])
    b.fast.end_batch()
    assert not b.vframes and b.fast.dropped == 1
    # Small packets of another flow between two super-frames: each its own write, in order.
    data = bytes(range(256)) * 20
    first = build_gso(data, MSS, addresses=(ip_a.packed, ip_b.packed), seq=1)
    ping = ping_frame(a.site, ip_a, ip_b)
    second = build_gso(data, MSS, addresses=(ip_a.packed, ip_b.packed), seq=1 + len(data))
    a.links.limit = 1440
    a.fast.tap_vframes([first], 0.0)
    a.fast.tap_frames([ping], 0.0)
    a.fast.tap_vframes([second], 0.0)
    assert len(b.vframes) == 3 and payload_of([b.vframes[0], b.vframes[2]]) == data + data
    assert b.vframes[1][10:] == b.site.mac + b.site.core.remote_mac + ping[12:]
    # A packet from an address its sender does not hold takes the core's path (copied out).
    stranger = build_gso(bytes(100), MSS, addresses=(IPv4Address("10.250.99.99").packed, ip_b.packed))
    sent = b.site.core.receiver.rx_packets
    a.links.send_direct(b.site.address, Service.IPOP, [b.fast._vnet + stranger[:10] + stranger[24:]])
    assert len(b.vframes) == 3 and b.site.core.receiver.rx_packets == sent
