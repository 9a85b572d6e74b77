"""Golden frames from real clients (dhclient, udhcpc, dhcpcd, dig, arping) against a real server
(dnsmasq), captured by tests/data/golden/capture.sh: our codecs read every one of them, and our
responders, driven by the clients' own frames, answer as a real server would."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from tests.vnproto.golden import (
    CAPTURE_CONFIG,
    CAPTURES,
    CLIENT_MAC,
    DHCP_CLIENTS,
    HOSTNAMES,
    SERVER_IP,
    SERVER_MAC,
    SUBNET,
    DhcpFrame,
    dhcp_frames,
    frames,
)
from vnproto import (
    BOOTREPLY,
    BOOTREQUEST,
    AllocateAddress,
    Answer,
    ArpPacket,
    ArpResponder,
    DhcpAction,
    DhcpMessage,
    DhcpServer,
    DnsResponder,
    EthernetFrame,
    EtherType,
    Forward,
    GratuitousArp,
    HostnameLearned,
    IPv4Packet,
    LeaseBound,
    Lookup,
    MessageType,
    Opt,
    ProbeSeen,
    ReleaseAddress,
    SendFrame,
    decode_domain_list,
    decode_udp_frame,
    ipv4_dst,
    payload_offset,
)

ALICE = IPv4Address("10.250.0.77")


@pytest.mark.parametrize("capture", CAPTURES)
def test_every_captured_frame_decodes_and_reencodes_identically(capture: str) -> None:
    records = frames(capture)
    assert len(records) >= 8
    for _, frame in records:
        eth = EthernetFrame.decode(frame)
        assert eth.encode() == frame
        if eth.ethertype == EtherType.ARP:
            arp = ArpPacket.decode(eth.payload)
            assert arp.encode() == eth.payload[:28]
        elif eth.ethertype == EtherType.IPV4:
            packet = IPv4Packet.decode(eth.payload)  # verifies the header checksum
            assert packet.encode() == eth.payload[: packet.header_length + len(packet.payload)]
            assert ipv4_dst(frame) == packet.dst


@pytest.mark.parametrize("capture", DHCP_CLIENTS)
def test_captured_dhcp_messages_round_trip(capture: str) -> None:
    for f in dhcp_frames(capture):
        again = DhcpMessage.decode(f.msg.encode(pad_to=0))
        assert again == f.msg


def converse(capture: str) -> tuple[DhcpServer, list[tuple[DhcpFrame, list[DhcpAction]]], IPv4Address]:
    """Feed the client's captured frames to our server, at their captured times. The allocator grants
    what dnsmasq offered, so that the client's later messages (which name that address) fit."""
    captured = dhcp_frames(capture)
    offered = next(f.msg.yiaddr for f in captured if f.msg.message_type == MessageType.OFFER)
    server = DhcpServer(CAPTURE_CONFIG)
    steps: list[tuple[DhcpFrame, list[DhcpAction]]] = []
    for f in captured:
        if f.msg.op != BOOTREQUEST:
            continue
        actions = server.receive(f.frame, f.time)
        for action in list(actions):
            if isinstance(action, AllocateAddress):
                actions += server.address_allocated(action.client_key, offered, f.time)
        steps.append((f, actions))
    return server, steps, offered


def replies(actions: list[DhcpAction]) -> list[tuple[DhcpMessage, bytes]]:
    out = []
    for action in actions:
        if isinstance(action, SendFrame):
            udp = decode_udp_frame(action.frame)
            out.append((DhcpMessage.decode(udp.payload), action.frame))
    return out


@pytest.mark.parametrize("capture", DHCP_CLIENTS)
def test_conversation_driven_by_captured_frames_ends_with_ack_and_expected_options(capture: str) -> None:
    server, steps, offered = converse(capture)
    kinds = [f.msg.message_type for f, _ in steps]
    assert kinds[0] == MessageType.DISCOVER and MessageType.REQUEST in kinds
    acks = [m for _, actions in steps for m, _ in replies(actions) if m.message_type == MessageType.ACK]
    assert acks, "no ACK"
    for ack in acks:
        assert ack.op == BOOTREPLY and ack.yiaddr == offered
    ack = acks[-1]
    assert ack.ip_option(Opt.SUBNET_MASK) == IPv4Address("255.255.0.0")
    assert ack.ip_option(Opt.BROADCAST_ADDRESS) == IPv4Address("10.250.255.255")
    assert ack.option(Opt.DNS_SERVERS) == SERVER_IP.packed
    assert ack.option(Opt.DOMAIN_NAME) == b"ipop"
    assert decode_domain_list(ack.option(Opt.DOMAIN_SEARCH) or b"") == ("ipop",)
    assert ack.int_option(Opt.INTERFACE_MTU) == 1400
    assert ack.int_option(Opt.LEASE_TIME) == 3600
    assert ack.int_option(Opt.RENEWAL_TIME) == 1800
    assert ack.int_option(Opt.REBINDING_TIME) == 3150
    assert ack.server_id == SERVER_IP
    assert ack.option(Opt.ROUTER) is None
    request = next(f.msg for f, _ in steps if f.msg.message_type == MessageType.REQUEST)
    assert ack.client_id == request.client_id  # echoed (RFC 6842) when sent, absent when not
    learned = [a for _, actions in steps for a in actions if isinstance(a, HostnameLearned)]
    assert [a.hostname for a in learned] == [HOSTNAMES[capture]]
    # Every client ends with a RELEASE: the address goes back, and the lease table is empty.
    last_frame, last_actions = steps[-1]
    assert last_frame.msg.message_type == MessageType.RELEASE
    release = last_actions[-1]
    assert isinstance(release, ReleaseAddress) and (release.ip, release.reason) == (offered, "released")
    assert server.leases() == []


@pytest.mark.parametrize("capture", DHCP_CLIENTS)
def test_replies_are_addressed_like_the_real_servers(capture: str) -> None:
    """Each of our replies goes to the same Ethernet and IP destination as dnsmasq's reply to the same
    request did: unicast to the offered address at chaddr, or to ciaddr once the client has one."""
    captured = dhcp_frames(capture)
    _, steps, _ = converse(capture)
    compared = 0
    for f, actions in steps:
        theirs = [
            g for g in captured if g.msg.op == BOOTREPLY and g.msg.xid == f.msg.xid and g.time >= f.time
        ]
        ours = replies(actions)
        if not theirs or not ours:
            continue
        reply, frame = ours[0]
        real = theirs[0]
        assert reply.message_type == real.msg.message_type
        assert (frame[0:6], decode_udp_frame(frame).dst_ip) == (real.frame[0:6], real.udp.dst_ip)
        assert frame[6:12] == SERVER_MAC and reply.xid == f.msg.xid
        compared += 1
    assert compared >= 2


def test_dhclient_reboot_and_udhcpc_renewal_are_recognised() -> None:
    server, _, _ = converse("dhclient")
    assert server.counters.by_state.get("bound:init-reboot", 0) >= 1
    server, _, _ = converse("udhcpc")
    assert server.counters.by_state.get("bound:renewing") == 1
    bound = [a for _, actions in converse("udhcpc")[1] for a in actions if isinstance(a, LeaseBound)]
    assert len(bound) == 2 and all(b.mac == CLIENT_MAC for b in bound)


def test_init_reboot_after_a_node_restart_goes_to_the_allocator() -> None:
    """A server without a record of the client (the node restarted, or the host moved here) asks the
    allocator for the address the client wants, and ACKs only if it gets exactly that one."""
    reboot = [f for f in dhcp_frames("dhclient") if f.msg.message_type == MessageType.REQUEST][1]
    assert reboot.msg.server_id is None and reboot.msg.requested_ip is not None
    for granted, expected in ((reboot.msg.requested_ip, MessageType.ACK), (ALICE, MessageType.NAK)):
        server = DhcpServer(CAPTURE_CONFIG)
        (allocate,) = server.receive(reboot.frame, reboot.time)
        assert isinstance(allocate, AllocateAddress) and allocate.requested_ip == reboot.msg.requested_ip
        actions = server.address_allocated(allocate.client_key, granted, reboot.time)
        assert [m.message_type for m, _ in replies(actions)] == [expected]


EXPECTED_DNS = {
    ("alice.ipop.", "A", True): "lookup",
    ("alice.ipop.", "AAAA", True): "lookup",
    ("alice.ipop.", "A", False): "lookup",
    ("C250005005.ipop.", "A", True): "answer",
    ("nobody.ipop.", "A", True): "lookup",
    ("5.5.250.10.in-addr.arpa.", "PTR", True): "answer",
    ("example.com.", "A", True): "forward",
    ("ipop.", "SOA", True): "answer",
}


def test_dig_queries_get_the_answers_the_issue_asks_for() -> None:
    responder = DnsResponder("ipop", SUBNET)
    members = {"alice": ALICE}
    seen = set()
    for _, frame in frames("dig"):
        udp = decode_udp_frame(frame) if ipv4_dst(frame) == SERVER_IP else None
        if udp is None or udp.dst_port != 53:
            continue
        query = DNSRecord.parse(udp.payload)
        edns = any(rr.rtype == QTYPE.OPT for rr in query.ar)
        key = (str(query.q.qname), QTYPE[query.q.qtype], edns)
        seen.add(key)
        decision = responder.handle(udp.payload)
        kind = EXPECTED_DNS[key]
        if kind == "forward":
            assert decision == Forward(udp.payload)
            continue
        if kind == "lookup":
            assert isinstance(decision, Lookup)
            reply = DNSRecord.parse(responder.complete(decision, members.get(decision.name)))
        else:
            assert isinstance(decision, Answer)
            reply = DNSRecord.parse(decision.reply)
        assert reply.header.id == query.header.id and reply.header.qr == 1
        assert any(rr.rtype == QTYPE.OPT for rr in reply.ar) == edns
        answers = {(QTYPE[rr.rtype], str(rr.rdata)) for rr in reply.rr}
        if key[0] == "nobody.ipop.":
            assert reply.header.rcode == RCODE.NXDOMAIN and not answers
        elif key[:2] == ("alice.ipop.", "AAAA"):
            assert reply.header.rcode == RCODE.NOERROR and not answers
        elif key[0] == "alice.ipop.":
            assert answers == {("A", "10.250.0.77")}
        elif key[0].startswith("C250005005"):
            assert answers == {("A", "10.250.5.5")}
        elif key[1] == "PTR":
            assert answers == {("PTR", "C250005005.ipop.")}
        else:
            assert reply.header.rcode == RCODE.NOERROR and [QTYPE[rr.rtype] for rr in reply.rr] == ["SOA"]
    assert seen == set(EXPECTED_DNS)


def arp_of(frame: bytes) -> ArpPacket | None:
    ethertype, offset = payload_offset(frame)
    return ArpPacket.decode(frame[offset:]) if ethertype == EtherType.ARP else None


def test_arping_requests_probes_and_announcements() -> None:
    remote = bytes.fromhex("fefd01020304")
    everyone = ArpResponder(remote, decide=lambda ip: True, subnet=SUBNET)
    nobody = ArpResponder(remote, decide=lambda ip: False, subnet=SUBNET)
    answered = probes = announcements = 0
    for _, frame in frames("arping") + frames("dhcpcd"):
        arp = arp_of(frame)
        if arp is None or frame[6:12] != CLIENT_MAC:
            continue  # the server's kernel's own ARP traffic
        actions = everyone.receive(frame)
        assert not any(isinstance(a, SendFrame) for a in nobody.receive(frame))
        sent = [a.frame for a in actions if isinstance(a, SendFrame)]
        if arp.is_probe:
            assert not sent and ProbeSeen(arp.target_ip, CLIENT_MAC) in actions
            probes += 1
        elif arp.is_gratuitous:
            assert not sent and GratuitousArp(arp.sender_ip, CLIENT_MAC) in actions
            announcements += 1
        elif arp.op == 2:
            assert not sent  # the client's own kernel answering the server
        else:
            (reply,) = sent
            decoded = arp_of(reply)
            assert decoded == ArpPacket(2, remote, arp.target_ip, CLIENT_MAC, arp.sender_ip)
            assert reply[0:6] == CLIENT_MAC and reply[6:12] == remote
            answered += 1
    assert (answered, probes, announcements) == (3, 4, 2)
