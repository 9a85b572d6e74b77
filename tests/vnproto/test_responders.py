"""The DNS and ARP responders, rule by rule."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from random import Random

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from vnproto import (
    REMOTE_MAC_PREFIX,
    Answer,
    ArpPacket,
    ArpResponder,
    DnsResponder,
    EtherType,
    Forward,
    GratuitousArp,
    Ignore,
    Lookup,
    NeighbourSeen,
    ProbeSeen,
    SendFrame,
    build_frame,
    random_remote_mac,
    static_name,
)
from vnproto.dns import fit

SUBNET = IPv4Network("10.250.0.0/16")
BOB = IPv4Address("10.250.3.4")


def query(name: str, qtype: str = "A", edns: int | None = None, **header: int) -> bytes:
    q = DNSRecord(DNSHeader(id=4321, rd=1, **header), q=DNSQuestion(name, getattr(QTYPE, qtype)))
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    data: bytes = q.pack()
    return data


def answer(decision: object) -> DNSRecord:
    assert isinstance(decision, Answer), decision
    return DNSRecord.parse(decision.reply)


def records(reply: DNSRecord) -> list[tuple[str, str, str]]:
    return [(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata)) for rr in reply.rr]


@pytest.fixture
def dns() -> DnsResponder:
    return DnsResponder("ipop", SUBNET)


def test_member_names_are_looked_up_then_completed(dns: DnsResponder) -> None:
    decision = dns.handle(query("Bob.IPOP."))
    assert isinstance(decision, Lookup) and (decision.name, decision.qtype) == ("bob", QTYPE.A)
    reply = DNSRecord.parse(dns.complete(decision, BOB))
    assert reply.header.id == 4321 and reply.header.aa == 1 and reply.header.rd == 1
    assert records(reply) == [("Bob.IPOP.", "A", "10.250.3.4")], "the question's case is kept (0x20)"
    assert reply.rr[0].ttl == 60
    missing = DNSRecord.parse(dns.complete(decision, None))
    assert missing.header.rcode == RCODE.NXDOMAIN and [QTYPE[r.rtype] for r in missing.auth] == ["SOA"]


def test_aaaa_and_other_types_for_a_member_are_nodata(dns: DnsResponder) -> None:
    for qtype in ("AAAA", "MX", "TXT"):
        decision = dns.handle(query("bob.ipop", qtype))
        assert isinstance(decision, Lookup)
        reply = DNSRecord.parse(dns.complete(decision, BOB))
        assert reply.header.rcode == RCODE.NOERROR and reply.rr == []


def test_static_names_both_ways(dns: DnsResponder) -> None:
    assert static_name(IPv4Address("10.250.5.5"), "ipop") == "C250005005.ipop"
    assert records(answer(dns.handle(query("c250005005.ipop")))) == [("c250005005.ipop.", "A", "10.250.5.5")]
    assert answer(dns.handle(query("C250005005.ipop", "AAAA"))).rr == []
    ptr = answer(dns.handle(query("5.5.250.10.in-addr.arpa", "PTR")))
    assert records(ptr) == [("5.5.250.10.in-addr.arpa.", "PTR", "C250005005.ipop.")]
    for outside in ("C251000001.ipop", "C999000000.ipop"):  # 10.251.0.1 is outside; 999 is no octet
        assert answer(dns.handle(query(outside))).header.rcode == RCODE.NXDOMAIN
    small = DnsResponder("vpn.example", IPv4Network("172.16.8.0/22"))
    assert records(answer(small.handle(query("C016009001.vpn.example"))))[0][2] == "172.16.9.1"


def test_unknown_shapes_in_the_domain_are_nxdomain_and_the_apex_has_a_soa(dns: DnsResponder) -> None:
    for name in ("a.b.ipop", "under_score.ipop", "-x.ipop"):
        assert answer(dns.handle(query(name))).header.rcode == RCODE.NXDOMAIN
    apex = answer(dns.handle(query("ipop", "SOA")))
    assert [QTYPE[rr.rtype] for rr in apex.rr] == ["SOA"]
    assert answer(dns.handle(query("ipop", "A"))).rr == []


def test_everything_else_is_forwarded_or_refused(dns: DnsResponder) -> None:
    for q in (query("example.com"), query("9.9.9.9.in-addr.arpa", "PTR"), query("ipop.example.com")):
        assert dns.handle(q) == Forward(q)
    closed = DnsResponder("ipop", SUBNET, forward=False)
    assert answer(closed.handle(query("example.com"))).header.rcode == RCODE.REFUSED


def test_malformed_and_unsupported_queries(dns: DnsResponder) -> None:
    assert isinstance(dns.handle(b"\x01\x02"), Ignore)
    assert (
        answer(dns.handle(b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\x3fabc")).header.rcode
        == RCODE.FORMERR
    )
    response = DNSRecord.parse(query("bob.ipop")).reply().pack()
    assert isinstance(dns.handle(response), Ignore)
    assert answer(dns.handle(query("bob.ipop", opcode=2))).header.rcode == RCODE.NOTIMP
    two = DNSRecord(DNSHeader(id=1), questions=[DNSQuestion("a.ipop"), DNSQuestion("b.ipop")]).pack()
    assert answer(dns.handle(two)).header.rcode == RCODE.FORMERR
    assert dns.counters.malformed == 2


def test_edns0_is_echoed_and_unknown_versions_get_badvers(dns: DnsResponder) -> None:
    reply = answer(dns.handle(query("C250005005.ipop", edns=4096)))
    (opt,) = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    assert opt.rclass == 1232
    assert not [rr for rr in answer(dns.handle(query("C250005005.ipop"))).ar if rr.rtype == QTYPE.OPT]
    q = DNSRecord(DNSHeader(id=9), q=DNSQuestion("C250005005.ipop"))
    q.add_ar(EDNS0(udp_len=1232, version=1))
    bad = answer(dns.handle(q.pack()))
    (opt,) = [rr for rr in bad.ar if rr.rtype == QTYPE.OPT]
    assert (int(opt.ttl) >> 24) == 1 and bad.header.rcode == 0  # extended RCODE 16 = BADVERS
    assert dns.handle(query("bob.ipop"), tcp=True) == Lookup("bob", QTYPE.A, query("bob.ipop"), True)


def test_a_reply_too_long_for_the_client_is_truncated() -> None:
    request = DNSRecord.parse(query("many.ipop", edns=512))
    reply = request.reply()
    for i in range(60):
        reply.add_answer(RR("many.ipop", QTYPE.A, rdata=A(f"10.250.1.{i}")))
    reply.add_ar(EDNS0(udp_len=1232))
    assert len(reply.pack()) > 512
    short = DNSRecord.parse(fit(reply, 512))
    assert short.header.tc == 1 and short.rr == [] and str(short.q.qname) == "many.ipop."
    assert [rr.rtype for rr in short.ar] == [QTYPE.OPT]
    assert fit(reply, 65535) == reply.pack()


# -- ARP ---------------------------------------------------------------------------------------------

REMOTE = bytes.fromhex("fefd11223344")
HOST_MAC = bytes.fromhex("020000000002")
HOST, PEER = IPv4Address("10.250.0.50"), IPv4Address("10.250.0.77")


def arp_frame(op: int, sender_ip: IPv4Address, target_ip: IPv4Address, sender_mac: bytes = HOST_MAC) -> bytes:
    packet = ArpPacket(op, sender_mac, sender_ip, b"\x00" * 6, target_ip)
    return build_frame(b"\xff" * 6, sender_mac, EtherType.ARP, packet.encode() + b"\x00" * 18)


def test_arp_answers_only_what_decide_allows_inside_the_subnet() -> None:
    asked: list[IPv4Address] = []

    def decide(ip: IPv4Address) -> bool:
        asked.append(ip)
        return ip == PEER

    arp = ArpResponder(REMOTE, decide, SUBNET)
    actions = arp.receive(arp_frame(1, HOST, PEER))
    assert actions[0] == NeighbourSeen(HOST, HOST_MAC)
    (reply,) = [a for a in actions if isinstance(a, SendFrame)]
    assert reply.frame[:12] == HOST_MAC + REMOTE
    assert ArpPacket.decode(reply.frame[14:]) == ArpPacket(2, REMOTE, PEER, HOST_MAC, HOST)
    assert arp.receive(arp_frame(1, HOST, IPv4Address("10.250.0.78"))) == [NeighbourSeen(HOST, HOST_MAC)]
    assert arp.receive(arp_frame(1, HOST, IPv4Address("192.168.0.1"))) == [NeighbourSeen(HOST, HOST_MAC)]
    assert asked == [PEER, IPv4Address("10.250.0.78")], "outside the subnet, decide is not even asked"


def test_arp_never_answers_probes_announcements_replies_or_itself() -> None:
    arp = ArpResponder(REMOTE, lambda ip: True, SUBNET)
    assert arp.receive(arp_frame(1, IPv4Address(0), PEER)) == [ProbeSeen(PEER, HOST_MAC)]
    assert arp.receive(arp_frame(1, PEER, PEER)) == [
        NeighbourSeen(PEER, HOST_MAC),
        GratuitousArp(PEER, HOST_MAC),
    ]
    assert arp.receive(arp_frame(2, HOST, PEER)) == [NeighbourSeen(HOST, HOST_MAC)]
    assert arp.receive(arp_frame(1, HOST, PEER, sender_mac=REMOTE)) == []
    assert arp.receive(b"\x00" * 20) == [] and arp.malformed == 1


def test_arp_request_builder_and_remote_mac() -> None:
    mac = random_remote_mac(Random(7))
    assert mac.startswith(REMOTE_MAC_PREFIX) and len(mac) == 6 and mac == random_remote_mac(Random(7))
    arp = ArpResponder(mac, lambda ip: False)
    request = ArpPacket.decode(arp.request(HOST)[14:])
    assert request.is_probe and request.target_ip == HOST and request.sender_mac == mac
    with pytest.raises(ValueError):
        ArpResponder(b"\x01" * 6, lambda ip: True)


def test_reverse_names_must_be_canonical(dns: DnsResponder) -> None:
    # Found by the fuzzer: a "00" label once crashed the responder.
    for name in ("5.5.250.00.in-addr.arpa", "5.5.250.010.in-addr.arpa", "5.5.256.10.in-addr.arpa"):
        assert isinstance(dns.handle(query(name, "PTR")), Forward)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True), min_size=1, max_size=3),
    st.sampled_from(["A", "AAAA", "PTR", "MX", "ANY", "SOA"]),
    st.sampled_from([None, 512, 1232, 4096]),
    st.booleans(),
)
def test_any_name_in_the_domain_gets_a_well_formed_answer(
    labels: list[str], qtype: str, edns: int | None, found: bool
) -> None:
    dns = DnsResponder("ipop", SUBNET)
    q = query(".".join([*labels, "ipop"]), qtype, edns)
    decision = dns.handle(q)
    assert isinstance(decision, Answer | Lookup)
    data = decision.reply if isinstance(decision, Answer) else dns.complete(decision, BOB if found else None)
    reply = DNSRecord.parse(data)
    assert reply.header.id == 4321 and reply.header.qr == 1 and reply.q == DNSRecord.parse(q).q
    assert len(data) <= (edns or 512)
    assert reply.header.rcode in (RCODE.NOERROR, RCODE.NXDOMAIN)
