"""Round trips and properties of every codec, the checksum, the fast helpers, ICMP and MSS clamping."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.vnproto.strategies import (
    arp_packets,
    dhcp_messages,
    domain_names,
    ethernet_frames,
    icmp_messages,
    ipv4_packets,
    ipv4s,
    macs,
    payloads,
    u16,
    udp_datagrams,
)
from vnproto import (
    ArpPacket,
    DecodeError,
    DhcpMessage,
    EthernetFrame,
    EtherType,
    IcmpMessage,
    IcmpType,
    IpProto,
    IPv4Packet,
    UdpDatagram,
    build_frame,
    checksum_update,
    clamp_mss,
    clamp_mss_frame,
    decode_domain_list,
    decode_udp_frame,
    encode_domain_list,
    fragmentation_needed_frame,
    internet_checksum,
    ipv4_dst,
    ipv4_dst_bytes,
    ipv4_src,
    mac_from_str,
    mac_to_str,
    needs_fragmentation,
    payload_offset,
    pseudo_header_sum,
    tcp_mss,
    udp_frame,
    udp_ports,
)

A, B = IPv4Address("10.250.0.5"), IPv4Address("10.250.0.9")
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("fefd01020304")


def naive_checksum(data: bytes) -> int:
    """RFC 1071 written the slow, obvious way, to check the fast one against."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# -- checksum ----------------------------------------------------------------------------------------


@given(st.binary(max_size=2000))
def test_checksum_matches_the_obvious_implementation(data: bytes) -> None:
    assert internet_checksum(data) == naive_checksum(data)


def test_checksum_of_rfc1071_example() -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2, so the checksum is 220d.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


@given(st.binary(min_size=2, max_size=200).filter(lambda b: len(b) % 2 == 0), st.data())
def test_incremental_update_equals_recomputation(data: bytes, draw: st.DataObject) -> None:
    at = draw.draw(st.integers(0, len(data) // 2 - 1)) * 2
    new_word = draw.draw(u16)
    changed = data[:at] + new_word.to_bytes(2, "big") + data[at + 2 :]
    old_word = int.from_bytes(data[at : at + 2], "big")
    updated = checksum_update(internet_checksum(data), old_word, new_word)
    # One's complement has two zeros; both mean the same sum.
    assert updated == internet_checksum(changed) or {updated, internet_checksum(changed)} == {0, 0xFFFF}


# -- Ethernet ----------------------------------------------------------------------------------------


@given(ethernet_frames)
def test_ethernet_round_trip(frame: EthernetFrame) -> None:
    data = frame.encode()
    assert EthernetFrame.decode(data) == frame
    assert payload_offset(data) == (frame.ethertype, 14 + 4 * len(frame.tags))


def test_ethernet_refuses_short_frames_8023_lengths_and_tag_stacks() -> None:
    for bad in (b"", b"\x00" * 13, b"\x00" * 12 + b"\x05\xdc", b"\x00" * 12 + b"\x81\x00" * 7):
        with pytest.raises(DecodeError):
            EthernetFrame.decode(bad)


def test_mac_text() -> None:
    assert mac_to_str(mac_from_str("FE-FD-00-11-22-33")) == "fe:fd:00:11:22:33"
    with pytest.raises(ValueError):
        mac_from_str("fe:fd:00")


# -- ARP ---------------------------------------------------------------------------------------------


@given(arp_packets, st.binary(max_size=18))
def test_arp_round_trip_ignoring_padding(packet: ArpPacket, padding: bytes) -> None:
    assert ArpPacket.decode(packet.encode() + padding) == packet


def test_arp_refuses_other_hardware_and_operations() -> None:
    good = ArpPacket(1, MAC_A, A, b"\x00" * 6, B).encode()
    for bad in (good[:27], b"\x00\x06" + good[2:], good[:7] + b"\x03" + good[8:]):
        with pytest.raises(DecodeError):
            ArpPacket.decode(bad)


def test_probe_and_announcement_are_named() -> None:
    zero = IPv4Address(0)
    assert ArpPacket(1, MAC_A, zero, b"\x00" * 6, B).is_probe
    assert ArpPacket(1, MAC_A, A, b"\xff" * 6, A).is_gratuitous
    assert ArpPacket(2, MAC_A, A, b"\xff" * 6, A).is_gratuitous
    assert not ArpPacket(1, MAC_A, A, b"\x00" * 6, B).is_gratuitous


# -- IPv4 --------------------------------------------------------------------------------------------


@given(ipv4_packets, st.binary(max_size=30))
def test_ipv4_round_trip_with_valid_checksum_and_padding(packet: IPv4Packet, padding: bytes) -> None:
    data = packet.encode()
    assert internet_checksum(data[: packet.header_length]) == 0
    assert IPv4Packet.decode(data + padding) == packet
    frame = build_frame(MAC_A, MAC_B, EtherType.IPV4, data)
    assert ipv4_dst(frame) == packet.dst and ipv4_src(frame) == packet.src
    assert ipv4_dst_bytes(frame) == packet.dst.packed
    assert packet.is_fragment == (packet.more_fragments or packet.fragment_offset > 0)


def test_ipv4_refuses_bad_version_lengths_and_checksum() -> None:
    good = IPv4Packet(A, B, IpProto.UDP, b"x" * 10).encode()
    corrupt = bytearray(good)
    corrupt[8] ^= 1  # TTL changed, checksum not
    for bad in (
        good[:19],
        b"\x65" + good[1:],
        b"\x44" + good[1:],
        good[:2] + b"\x00\x10" + good[4:],
        good[:25],
    ):
        with pytest.raises(DecodeError):
            IPv4Packet.decode(bad)
    with pytest.raises(DecodeError, match="checksum"):
        IPv4Packet.decode(bytes(corrupt))
    assert IPv4Packet.decode(bytes(corrupt), verify_checksum=False).ttl == 65


def test_fast_helpers_see_through_vlan_tags_and_refuse_non_ipv4() -> None:
    packet = IPv4Packet(A, B, IpProto.UDP, UdpDatagram(1000, 53, b"q").encode(A, B)).encode()
    tagged = EthernetFrame(MAC_A, MAC_B, EtherType.IPV4, packet, (b"\x81\x00\x00\x05",)).encode()
    assert ipv4_dst(tagged) == B and ipv4_src(tagged) == A and udp_ports(tagged) == (1000, 53)
    arp = build_frame(MAC_A, MAC_B, EtherType.ARP, ArpPacket(1, MAC_B, A, MAC_A, B).encode())
    assert ipv4_dst(arp) is None and udp_ports(arp) is None and ipv4_dst(b"\x00" * 20) is None


# -- UDP ---------------------------------------------------------------------------------------------


@given(udp_datagrams, ipv4s, ipv4s)
def test_udp_round_trip_and_checksum_covers_pseudo_header(
    dgram: UdpDatagram, src: IPv4Address, dst: IPv4Address
) -> None:
    data = dgram.encode(src, dst)
    assert UdpDatagram.decode(data, src, dst) == dgram
    assert internet_checksum(data, pseudo_header_sum(src, dst, 17, len(data))) == 0
    assert data[6:8] != b"\x00\x00"  # zero means "no checksum"; a computed zero is sent as ffff
    other = IPv4Address(int(dst) ^ 1)
    with pytest.raises(DecodeError):
        UdpDatagram.decode(data, src, other)


@given(udp_datagrams, st.data())
def test_udp_detects_any_single_bit_error(dgram: UdpDatagram, data: st.DataObject) -> None:
    wire = bytearray(dgram.encode(A, B))
    bit = data.draw(st.integers(8 * 8, 8 * len(wire) - 1)) if len(wire) > 8 else None
    if bit is None:
        return
    wire[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecodeError):
        UdpDatagram.decode(bytes(wire), A, B)


def test_udp_zero_checksum_means_none_and_lengths_are_checked() -> None:
    wire = UdpDatagram(5, 6, b"abc").encode(A, B)
    assert UdpDatagram.decode(wire[:6] + b"\x00\x00" + b"xyz", A, B).payload == b"xyz"
    for bad in (wire[:7], wire[:4] + b"\x00\x07" + wire[6:], wire[:4] + b"\x00\x20" + wire[6:]):
        with pytest.raises(DecodeError):
            UdpDatagram.decode(bad, A, B)


@given(st.tuples(macs, macs, ipv4s, ipv4s, u16, u16, payloads))
def test_udp_frame_round_trip(fields: tuple[bytes, bytes, IPv4Address, IPv4Address, int, int, bytes]) -> None:
    sm, dm, si, di, sp, dp, body = fields
    frame = udp_frame(sm, dm, si, di, src_port=sp, dst_port=dp, payload=body)
    decoded = decode_udp_frame(frame)
    assert (decoded.src_mac, decoded.dst_mac, decoded.src_ip, decoded.dst_ip) == (sm, dm, si, di)
    assert (decoded.src_port, decoded.dst_port, decoded.payload) == (sp, dp, body)
    assert decoded.encode() == frame and udp_ports(frame) == (sp, dp)


def test_udp_frame_refuses_fragments() -> None:
    dgram = UdpDatagram(68, 67, b"x" * 20).encode(A, B)
    fragment = IPv4Packet(A, B, IpProto.UDP, dgram, more_fragments=True).encode()
    frame = build_frame(MAC_A, MAC_B, EtherType.IPV4, fragment)
    assert udp_ports(frame) is None
    with pytest.raises(DecodeError, match="fragment"):
        decode_udp_frame(frame)


# -- ICMP --------------------------------------------------------------------------------------------


@given(icmp_messages)
def test_icmp_round_trip(message: IcmpMessage) -> None:
    data = message.encode()
    assert internet_checksum(data) == 0
    assert IcmpMessage.decode(data) == message


def test_echo_reply_keeps_identifier_sequence_and_data() -> None:
    request = IcmpMessage.decode(IcmpMessage.echo(0x1234, 7, b"ping").encode())
    assert request.is_echo and (request.identifier, request.sequence) == (0x1234, 7)
    reply = request.echo_reply()
    assert (reply.type, reply.rest, reply.payload) == (IcmpType.ECHO_REPLY, request.rest, b"ping")
    with pytest.raises(ValueError):
        reply.echo_reply()


def test_fragmentation_needed_answers_an_oversized_df_packet() -> None:
    udp = UdpDatagram(40000, 9, b"z" * 1472).encode(A, B)
    big = IPv4Packet(A, B, IpProto.UDP, udp, dont_fragment=True).encode()
    frame = build_frame(MAC_B, MAC_A, EtherType.IPV4, big)
    router = IPv4Address("10.250.0.1")
    assert needs_fragmentation(frame, 1400) and not needs_fragmentation(frame, 1500)
    reply = fragmentation_needed_frame(frame, 1400, router, MAC_B)
    assert reply[0:6] == MAC_A and reply[6:12] == MAC_B
    packet = IPv4Packet.decode(reply[14:])
    assert (packet.src, packet.dst, packet.protocol) == (router, A, IpProto.ICMP)
    icmp = IcmpMessage.decode(packet.payload)
    assert (icmp.type, icmp.code, icmp.next_hop_mtu) == (3, 4, 1400)
    assert icmp.payload == big[:548]  # RFC 1812: as much as fits in 576 bytes
    assert len(packet.encode()) <= 576


def test_no_icmp_error_about_an_icmp_error_or_a_later_fragment() -> None:
    error = IcmpMessage.unreachable(3, b"\x45" + b"\x00" * 27).encode()
    about_error = IPv4Packet(A, B, IpProto.ICMP, error, dont_fragment=True).encode()
    later = IPv4Packet(A, B, IpProto.UDP, b"x" * 100, fragment_offset=10).encode()
    for packet in (about_error, later):
        with pytest.raises(DecodeError):
            fragmentation_needed_frame(build_frame(MAC_B, MAC_A, EtherType.IPV4, packet), 1400, B, MAC_B)


# -- TCP MSS -----------------------------------------------------------------------------------------


def tcp_syn(mss: int | None, nops: int, payload: bytes = b"", flags: int = 0x02) -> bytes:
    options = b"\x01" * nops + (struct.pack("!BBH", 2, 4, mss) if mss is not None else b"")
    options += b"\x04\x02"  # SACK permitted
    options += b"\x00" * (-len(options) % 4)
    header_len = 20 + len(options)
    header = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, (header_len // 4) << 4, flags, 64240, 0, 0)
    segment = header + options + payload
    checksum = internet_checksum(segment, pseudo_header_sum(A, B, 6, len(segment)))
    segment = segment[:16] + checksum.to_bytes(2, "big") + segment[18:]
    return IPv4Packet(A, B, IpProto.TCP, segment).encode()


def tcp_checksum_ok(packet: bytes) -> bool:
    segment = packet[20:]
    return internet_checksum(segment, pseudo_header_sum(A, B, 6, len(segment))) == 0


@given(st.integers(1, 0xFFFF), st.integers(0, 3), st.binary(max_size=40), st.integers(536, 1460))
def test_clamping_lowers_mss_and_keeps_checksum_valid(
    mss: int, nops: int, payload: bytes, limit: int
) -> None:
    packet = tcp_syn(mss, nops, payload)
    assert tcp_mss(packet) == mss and tcp_checksum_ok(packet)
    clamped = clamp_mss(packet, limit)
    assert tcp_mss(clamped) == min(mss, limit)
    assert tcp_checksum_ok(clamped)
    assert len(clamped) == len(packet)
    if mss <= limit:
        assert clamped is packet
    frame = build_frame(MAC_A, MAC_B, EtherType.IPV4, packet)
    assert clamp_mss_frame(frame, limit) == frame[:14] + clamped


def test_clamping_leaves_everything_else_alone() -> None:
    ack = tcp_syn(1460, 0, flags=0x10)
    no_mss = tcp_syn(None, 1)
    udp = IPv4Packet(A, B, IpProto.UDP, b"x" * 30).encode()
    for packet in (ack, no_mss, udp, b"garbage", b""):
        assert clamp_mss(packet, 1360) is packet
        frame = build_frame(MAC_A, MAC_B, EtherType.IPV4, packet)
        assert clamp_mss_frame(frame, 1360) is frame
    with pytest.raises(ValueError):
        clamp_mss(ack, 0)


# -- DHCP --------------------------------------------------------------------------------------------


@given(dhcp_messages)
def test_dhcp_round_trip_including_long_options(message: DhcpMessage) -> None:
    data = message.encode()
    assert len(data) >= 300
    assert DhcpMessage.decode(data) == message


def test_dhcp_concatenates_split_options_and_reads_overloaded_fields() -> None:
    base = DhcpMessage(1, 7, MAC_A + b"\x00" * 10, ((53, b"\x01"),))
    wire = bytearray(base.encode(pad_to=0))
    # Option 52 = 3: more options in file (read first) and sname; option 12 split over both.
    file = bytes([12, 3]) + b"abc" + bytes([255])
    sname = bytes([12, 2]) + b"de" + bytes([255])
    wire[108 : 108 + len(file)] = file
    wire[44 : 44 + len(sname)] = sname
    wire[-1:] = bytes([52, 1, 3, 255])
    decoded = DhcpMessage.decode(bytes(wire))
    assert decoded.hostname == "abcde" and decoded.sname == b"" and decoded.file == b""


def test_dhcp_refuses_bootp_and_bad_option_lengths() -> None:
    good = DhcpMessage(1, 7, MAC_A + b"\x00" * 10, ((53, b"\x01"),)).encode(pad_to=0)
    for bad in (good[:239], good[:236] + b"\x00\x00\x00\x00" + good[240:], good[:-1] + b"\x0c\x05ab"):
        with pytest.raises(DecodeError):
            DhcpMessage.decode(bad)


@given(st.lists(domain_names, min_size=1, max_size=5).map(tuple))
def test_domain_search_list_round_trip(names: tuple[str, ...]) -> None:
    assert decode_domain_list(encode_domain_list(names)) == names


def test_domain_search_list_follows_compression_pointers() -> None:
    # RFC 3397 §3 example shape: "eng.apple.com" then "marketing" + pointer to "apple.com".
    value = b"\x03eng\x05apple\x03com\x00\x09marketing\xc0\x04"
    assert decode_domain_list(value) == ("eng.apple.com", "marketing.apple.com")
    with pytest.raises(DecodeError):
        decode_domain_list(b"\xc0\x00")  # a pointer to itself
