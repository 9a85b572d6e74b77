"""Hypothesis strategies for vnproto's messages."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import strategies as st

from vnproto import ArpPacket, DhcpMessage, EthernetFrame, IcmpMessage, IPv4Packet, Opt, UdpDatagram

macs = st.binary(min_size=6, max_size=6)
ipv4s = st.integers(0, 2**32 - 1).map(IPv4Address)
u16 = st.integers(0, 0xFFFF)
payloads = st.binary(max_size=600)
ethertypes = st.integers(0x0600, 0xFFFF).filter(lambda t: t not in (0x8100, 0x88A8, 0x9100))
tags = st.lists(
    st.tuples(st.sampled_from([b"\x81\x00", b"\x88\xa8"]), st.binary(min_size=2, max_size=2)).map(
        lambda t: t[0] + t[1]
    ),
    max_size=2,
).map(tuple)

ethernet_frames = st.builds(EthernetFrame, macs, macs, ethertypes, payloads, tags)
arp_packets = st.builds(ArpPacket, st.sampled_from([1, 2]), macs, ipv4s, macs, ipv4s)
ipv4_packets = st.builds(
    IPv4Packet,
    src=ipv4s,
    dst=ipv4s,
    protocol=st.integers(0, 255),
    payload=payloads,
    ttl=st.integers(0, 255),
    tos=st.integers(0, 255),
    identification=u16,
    dont_fragment=st.booleans(),
    more_fragments=st.booleans(),
    fragment_offset=st.integers(0, 0x1FFF),
    options=st.integers(0, 10).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
)
udp_datagrams = st.builds(UdpDatagram, u16, u16, payloads)
icmp_messages = st.builds(
    IcmpMessage, st.integers(0, 255), st.integers(0, 255), st.binary(min_size=4, max_size=4), payloads
)
_option_codes = st.integers(1, 254).filter(lambda c: c != Opt.OVERLOAD)
dhcp_options = st.dictionaries(_option_codes, st.binary(max_size=600), max_size=12).map(
    lambda d: tuple(d.items())
)
_no_trailing_nul = st.binary(max_size=64).map(lambda b: b.rstrip(b"\x00"))
dhcp_messages = st.builds(
    DhcpMessage,
    op=st.sampled_from([1, 2]),
    xid=st.integers(0, 2**32 - 1),
    chaddr=st.binary(min_size=16, max_size=16),
    options=dhcp_options,
    ciaddr=ipv4s,
    yiaddr=ipv4s,
    siaddr=ipv4s,
    giaddr=ipv4s,
    flags=u16,
    secs=u16,
    hops=st.integers(0, 255),
    htype=st.integers(0, 255),
    hlen=st.integers(0, 16),
    sname=_no_trailing_nul,
    file=st.binary(max_size=128).map(lambda b: b.rstrip(b"\x00")),
)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
domain_names = st.lists(labels, min_size=1, max_size=4).map(".".join)
