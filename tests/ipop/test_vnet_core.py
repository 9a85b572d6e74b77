"""The virtual network core, several nodes on a scripted DHT ring (real DhtNodes, virtual time): DHCP
through the DHT, ARP and unicast between members, the anti-spoofing check, static claims and conflicts,
"no such mapping", broadcast, namespaces, DNS, MTU handling, restarts and the join gate."""

from __future__ import annotations

from ipaddress import IPv4Address

from dnslib import QTYPE, RCODE, RR, DNSRecord

from ipop.vnconfig import remote_mac_of
from ipop.vnet import virtual_mtu
from ipop.vnet_core import VnetCore
from ipop.vnwire import HEADER_LEN, KIND_UNICAST, namespace_tag, packet_header
from overlay import Delivered, Service
from tests.ipop.vnet_harness import SERVER, Net, Site, arp_request, dhcp, dhcp_replies, lease
from vnproto import (
    ArpOp,
    ArpPacket,
    EtherType,
    IcmpMessage,
    IcmpType,
    IpProto,
    IPv4Packet,
    MessageType,
    build_frame,
    decode_udp_frame,
    tcp_mss,
    udp_frame,
)


def ping_frame(site: Site, src: IPv4Address, dst: IPv4Address, seq: int = 1, size: int = 56) -> bytes:
    icmp = IcmpMessage.echo(0x1234, seq, bytes(size)).encode()
    packet = IPv4Packet(src, dst, IpProto.ICMP, icmp, dont_fragment=True).encode()
    return build_frame(remote_mac_of(site.address), site.mac, EtherType.IPV4, packet)


def icmp_in(frames: list[bytes]) -> list[tuple[IPv4Packet, IcmpMessage, bytes]]:
    out = []
    for frame in frames:
        if frame[12:14] == b"\x08\x00":
            packet = IPv4Packet.decode(frame[14:])
            if packet.protocol == IpProto.ICMP:
                out.append((packet, IcmpMessage.decode(packet.payload), frame))
    return out


def arp_replies(frames: list[bytes]) -> list[ArpPacket]:
    return [ArpPacket.decode(f[14:]) for f in frames if f[12:14] == b"\x08\x06"]


def two_members(net: Net) -> tuple[Site, IPv4Address, Site, IPv4Address]:
    a, b = net.site("alice"), net.site("bob")
    return a, lease(a), b, lease(b)


def test_dhcp_gives_distinct_addresses_claimed_in_the_dht() -> None:
    net = Net()
    a, ip_a, b, ip_b = two_members(net)
    assert ip_a != ip_b and ip_a in a.core.config.subnet and SERVER not in (ip_a, ip_b)
    assert ip_a.packed in a.core.claims.held and ip_b.packed in b.core.claims.held
    net.run(2)
    assert {r["name"]: r["state"] for r in a.core.names.status()} == {"alice": "held"}


def test_ping_between_members_through_arp_and_the_overlay() -> None:
    net = Net()
    a, ip_a, b, ip_b = two_members(net)
    a.frame(arp_request(a.mac, ip_a, ip_b))
    net.run(1)
    (reply,) = arp_replies(a.take())  # answered once the lookup ended
    assert reply.op == ArpOp.REPLY and reply.sender_ip == ip_b
    assert reply.sender_mac == remote_mac_of(a.address)
    a.frame(ping_frame(a, ip_a, ip_b))
    net.run(1)
    ((packet, message, frame),) = icmp_in(b.take())
    assert (packet.src, packet.dst, message.type) == (ip_a, ip_b, IcmpType.ECHO_REQUEST)
    assert frame[0:6] == b.mac and frame[6:12] == remote_mac_of(b.address)
    echo = IPv4Packet(ip_b, ip_a, IpProto.ICMP, message.echo_reply().encode()).encode()
    b.frame(build_frame(remote_mac_of(b.address), b.mac, EtherType.IPV4, echo))
    net.run(1)
    ((back, answer, _),) = icmp_in(a.take())
    assert (back.src, answer.type) == (ip_b, IcmpType.ECHO_REPLY)
    assert a.core.tx_packets == 1 and b.core.receiver.rx_packets == 1


def test_a_packet_whose_source_the_sender_does_not_hold_is_dropped() -> None:
    net = Net()
    _a, ip_a, b, ip_b = two_members(net)
    c = net.site("carol")
    ip_c = lease(c)
    # Carol's node sends a packet claiming Alice's address as its source.
    packet = IPv4Packet(ip_a, ip_b, IpProto.ICMP, IcmpMessage.echo(1, 1, b"x").encode()).encode()
    header = packet_header(KIND_UNICAST, namespace_tag("default"))
    b.core.delivered(Delivered(c.address, b.address, Service.IPOP, header + packet, 1, True), net.ring.now)
    net.run(1)
    assert b.take() == [] and b.core.counters["rx_spoofed"] == 1
    # The same packet from Carol's own address is delivered.
    honest = IPv4Packet(ip_c, ip_b, IpProto.ICMP, IcmpMessage.echo(1, 1, b"x").encode()).encode()
    b.core.delivered(Delivered(c.address, b.address, Service.IPOP, header + honest, 1, True), net.ring.now)
    net.run(1)
    assert len(icmp_in(b.take())) == 1


def test_another_namespace_sees_nothing() -> None:
    net = Net()
    a, ip_a, b, ip_b = two_members(net)
    other = net.site("mallory", namespace="other")
    assert lease(other)  # its own namespace's DHT keys: it may even get one of our addresses
    packet = IPv4Packet(ip_a, ip_b, IpProto.ICMP, IcmpMessage.echo(1, 1, b"x").encode()).encode()
    header = packet_header(KIND_UNICAST, namespace_tag("other"))
    b.core.delivered(Delivered(other.address, b.address, Service.IPOP, header + packet, 1, True), 0.0)
    assert b.take() == [] and b.core.counters["rx_other_namespace"] == 1
    # Its broadcasts do not reach our members either.
    net.run(35)
    assert other.address not in a.core.members.addresses and b.address in a.core.members.addresses


def test_static_addresses_first_claim_wins_and_the_other_is_dropped() -> None:
    net = Net()
    a, b, c = net.site("alice"), net.site("bob"), net.site("carol")
    ip_c = lease(c)
    static = IPv4Address("10.250.77.77")
    a.frame(ping_frame(a, static, ip_c))
    net.run(2)
    b.frame(ping_frame(b, static, ip_c))
    net.run(2)
    assert [r["state"] for r in a.core.claims.status()] == ["held"]
    assert [r["state"] for r in b.core.claims.status()] == ["conflict"]
    assert b.core.claims.status()[0]["held_by"]
    for _ in range(3):
        a.frame(ping_frame(a, static, ip_c))
        b.frame(ping_frame(b, static, ip_c))
        net.run(1)
    assert a.core.tx_packets == 3
    assert b.core.tx_packets == 0 and b.core.counters["conflict_dropped"] >= 3
    assert len(icmp_in(c.take())) == 3
    # The winner's name points at the static address.
    net.run(2)
    assert a.core.names.local("alice") == static


def test_a_stale_mapping_is_corrected_by_no_such_mapping() -> None:
    net = Net()
    a, ip_a, b, ip_b = two_members(net)
    a.frame(ping_frame(a, ip_a, ip_b))
    net.run(1)
    assert len(icmp_in(b.take())) == 1
    # Bob's machine releases its address; Alice's cache still points at Bob.
    b.frame(dhcp(MessageType.RELEASE, b.mac, ciaddr=ip_b, to=SERVER))
    net.run(1)
    assert ip_b.packed not in b.core.claims.held
    a.frame(ping_frame(a, ip_a, ip_b, seq=2))
    net.run(1)
    assert b.core.counters["rx_not_ours"] == 1 and a.core.counters["no_mapping_heard"] == 1
    assert ip_b.packed not in a.core.mapping.routes
    a.frame(ping_frame(a, ip_a, ip_b, seq=3))
    net.run(2)
    assert a.core.counters["no_mapping_dropped"] == 1  # looked up again: nobody holds it now


def test_broadcast_reaches_every_member() -> None:
    net = Net()
    sites = [net.site(n) for n in ("alice", "bob", "carol", "dave")]
    addresses = [lease(s) for s in sites]
    net.run(3)  # no membership read needed: each newcomer said hello to those before it
    datagram = udp_frame(
        sites[0].mac,
        b"\xff" * 6,
        addresses[0],
        IPv4Address("10.250.255.255"),
        src_port=5000,
        dst_port=5001,
        payload=b"hello, everyone",
    )
    sites[0].frame(datagram)
    net.run(1)
    for site in sites[1:]:
        (frame,) = [f for f in site.take() if f[12:14] == b"\x08\x00"]
        assert frame[0:6] == b"\xff" * 6 and decode_udp_frame(frame).payload == b"hello, everyone"


def test_dns_answers_members_static_names_ptr_and_forwards_the_rest() -> None:
    net = Net()
    a, ip_a, _b, ip_b = two_members(net)
    net.run(2)

    def ask(name: str, qtype: str = "A") -> DNSRecord:
        query = DNSRecord.question(name, qtype).pack()
        a.frame(
            udp_frame(
                a.mac, remote_mac_of(a.address), ip_a, SERVER, src_port=4444, dst_port=53, payload=query
            )
        )
        net.run(1)
        (frame,) = a.take()
        return DNSRecord.parse(decode_udp_frame(frame).payload)

    assert str(ask("bob.ipop").a.rdata) == str(ip_b)
    assert str(ask("alice.ipop").a.rdata) == str(ip_a)
    assert ask("nobody.ipop").header.rcode == RCODE.NXDOMAIN
    assert str(ask("C250000001.ipop").a.rdata) == "10.250.0.1"
    assert ask(".".join(reversed(str(ip_b).split("."))) + ".in-addr.arpa", "PTR").a.rtype == QTYPE.PTR
    assert ask("bob.ipop", "AAAA").rr == []
    gets = a.core.dht.started
    assert str(ask("bob.ipop").a.rdata) == str(ip_b) and a.core.dht.started == gets  # cached

    def upstream(query: bytes) -> bytes:
        request = DNSRecord.parse(query)
        reply = request.reply()
        reply.add_answer(*RR.fromZone("example.org. 60 A 192.0.2.7"))
        return bytes(reply.pack())

    a.upstream = upstream
    assert str(ask("example.org").a.rdata) == "192.0.2.7"
    assert len(a.forwarded) == 1


def test_name_clash_keeps_the_first_owner() -> None:
    net = Net()
    a = net.site("alice")
    ip_a = lease(a)
    b = net.site("bob")
    lease(b, host="alice")  # Bob's machine calls itself alice too
    net.run(2)
    assert {r["name"]: r["state"] for r in b.core.names.status()} == {"alice": "clash", "bob": "held"}
    assert a.core.names.local("alice") == ip_a


def test_mss_is_clamped_and_big_df_packets_get_fragmentation_needed() -> None:
    net = Net()
    a, ip_a, b, ip_b = two_members(net)
    a.frame(ping_frame(a, ip_a, ip_b))
    net.run(1)
    b.take()
    syn = bytearray(20)
    syn[0:4] = (40000).to_bytes(2, "big") + (80).to_bytes(2, "big")
    syn[12], syn[13] = 0x60, 0x02  # 24-byte header, SYN
    segment = bytes(syn) + b"\x02\x04\x05\xb4"  # MSS 1460
    packet = IPv4Packet(ip_a, ip_b, IpProto.TCP, segment).encode()
    a.frame(build_frame(remote_mac_of(a.address), a.mac, EtherType.IPV4, packet))
    net.run(1)
    (got,) = b.take()
    assert tcp_mss(got[14:]) == 1400 - 40
    a.frame(ping_frame(a, ip_a, ip_b, size=1500))
    ((packet_back, message, _),) = icmp_in(a.take())
    assert packet_back.src == SERVER and message.type == IcmpType.DEST_UNREACHABLE and message.code == 4
    assert message.next_hop_mtu == 1400


def test_restart_keeps_the_address() -> None:
    net = Net()
    a = net.site("alice")
    ip = lease(a)
    leases = a.core.local.export_leases(net.ring.now)
    history = dict(a.core.claims.history)
    a.core = VnetCore(a.core.config, a, history)  # the same identity and state directory
    a.core.restore(leases, net.ring.now)
    net.run(2)
    assert a.core.claims.status() == []  # not claimed before the overlay is joined
    a.core.set_joined(True, net.ring.now)
    net.run(2)
    assert ip.packed in a.core.claims.held
    a.frame(dhcp(MessageType.REQUEST, a.mac, requested=ip))  # INIT-REBOOT
    net.run(1)
    assert [m.message_type for m in dhcp_replies(a.take())] == [MessageType.ACK]
    # Without the lease file, the history alone gives the same address to a new DISCOVER.
    a.core = VnetCore(a.core.config, a, history)
    a.core.set_joined(True, net.ring.now)
    assert lease(a) == ip


def test_no_address_until_the_overlay_is_joined() -> None:
    net = Net()
    a = net.site("alice")
    a.core.joined = False
    a.frame(dhcp(MessageType.DISCOVER, a.mac))
    net.run(2)
    assert dhcp_replies(a.take()) == [] and a.core.local.counters["refused_unjoined"] == 1


def test_the_virtual_mtu_leaves_room_for_the_header_and_never_exceeds_the_overlay() -> None:
    assert virtual_mtu(None, 1224) == 1224 - HEADER_LEN
    assert virtual_mtu(1200, 1224) == 1200
    assert virtual_mtu(1500, 1224) == 1224 - HEADER_LEN  # a larger one would fragment the underlay
    # A TAP with offloads: made for what the fast path carries on a direct link (its header and the
    # virtio-net header inside the 1440 bytes of one datagram on a 1500-byte IPv4 path).
    assert virtual_mtu(None, 1224, 1440) == 1440 - HEADER_LEN - 10 == 1425
    assert virtual_mtu(1300, 1224, 1440) == 1300 and virtual_mtu(9000, 1224, 1440) == 1425


def test_the_ordinary_path_carries_its_own_mtu_when_the_fast_path_carries_more() -> None:
    """A virtual MTU made for direct links (1400 here) while the ordinary path carries 1219: a larger
    DF packet on the ordinary path gets ICMP naming 1219, so the machine lowers its path MTU."""
    net = Net()
    a = net.site("alice", routed_mtu=1219)
    ip_a = lease(a)
    b = net.site("bob")
    ip_b = lease(b)
    a.frame(ping_frame(a, ip_a, ip_b))
    net.run(1)
    b.take()
    a.frame(ping_frame(a, ip_a, ip_b, size=1219 - 28))
    net.run(1)
    assert len(b.take()) == 1 and icmp_in(a.take()) == []
    a.frame(ping_frame(a, ip_a, ip_b, size=1300))
    ((_, message, _),) = icmp_in(a.take())
    assert message.type == IcmpType.DEST_UNREACHABLE and message.code == 4 and message.next_hop_mtu == 1219
    assert a.core.config.mtu == 1400 and a.core.counters["frag_needed_sent"] == 1
