"""The DHCP server's state machine, path by path, and a property: no sequence of messages, allocator
answers and clock ticks makes it raise, hand one address to two clients, or send a malformed reply."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vnproto import (
    BROADCAST_MAC,
    AddressDeclined,
    AllocateAddress,
    DhcpAction,
    DhcpMessage,
    DhcpServer,
    DhcpServerConfig,
    HostnameLearned,
    LeaseBound,
    MessageType,
    Opt,
    ReleaseAddress,
    SendFrame,
    decode_udp_frame,
    udp_frame,
)

SERVER = IPv4Address("10.250.0.1")
SERVER_MAC = bytes.fromhex("fefd0a0b0c0d")
SUBNET = IPv4Network("10.250.0.0/16")
CONFIG = DhcpServerConfig(server_ip=SERVER, server_mac=SERVER_MAC, subnet=SUBNET, mtu=1400)
MAC = bytes.fromhex("020000000002")
KEY = b"\x01" + MAC
IP, OTHER = IPv4Address("10.250.0.100"), IPv4Address("10.250.0.101")
ZERO, BCAST = IPv4Address(0), IPv4Address("255.255.255.255")


def frame(
    kind: MessageType,
    *,
    mac: bytes = MAC,
    xid: int = 42,
    ciaddr: IPv4Address = ZERO,
    to: IPv4Address = BCAST,
    flags: int = 0,
    **opts: bytes,
) -> bytes:
    codes = {
        "requested": Opt.REQUESTED_IP,
        "server": Opt.SERVER_ID,
        "host": Opt.HOSTNAME,
        "cid": Opt.CLIENT_ID,
    }
    options = ((Opt.MESSAGE_TYPE, bytes((kind,))), *((codes[k], v) for k, v in opts.items()))
    msg = DhcpMessage(1, xid, mac + b"\x00" * 10, options, ciaddr=ciaddr, flags=flags)
    dst_mac = SERVER_MAC if to == SERVER else BROADCAST_MAC
    return udp_frame(mac, dst_mac, ciaddr, to, src_port=68, dst_port=67, payload=msg.encode())


def sent(actions: list[DhcpAction]) -> list[tuple[DhcpMessage, bytes]]:
    return [
        (DhcpMessage.decode(decode_udp_frame(a.frame).payload), a.frame)
        for a in actions
        if isinstance(a, SendFrame)
    ]


def kinds(actions: list[DhcpAction]) -> list[int | None]:
    return [m.message_type for m, _ in sent(actions)]


def bound(server: DhcpServer, now: float = 0.0, host: bytes = b"alpha") -> DhcpServer:
    """Bring MAC to BOUND on IP through DISCOVER, allocation, REQUEST."""
    (allocate,) = server.receive(frame(MessageType.DISCOVER, host=host), now)
    assert allocate == AllocateAddress(KEY, None, host.decode())
    assert kinds(server.address_allocated(KEY, IP, now)) == [MessageType.OFFER]
    actions = server.receive(frame(MessageType.REQUEST, server=SERVER.packed, requested=IP.packed), now)
    assert kinds(actions) == [MessageType.ACK]
    return server


def test_discover_offer_request_ack() -> None:
    server = DhcpServer(CONFIG)
    (allocate,) = server.receive(frame(MessageType.DISCOVER, host=b"Alpha"), 0.0)
    assert allocate == AllocateAddress(KEY, None, "alpha")
    assert server.receive(frame(MessageType.DISCOVER), 1.0) == [], (
        "a retransmission waits for the same answer"
    )
    [(offer, wire)] = sent(server.address_allocated(KEY, IP, 2.0))
    assert offer.message_type == MessageType.OFFER and offer.yiaddr == IP and offer.xid == 42
    assert wire[0:6] == MAC and decode_udp_frame(wire).dst_ip == IP  # unicast: no broadcast flag
    actions = server.receive(frame(MessageType.REQUEST, server=SERVER.packed, requested=IP.packed), 3.0)
    [(ack, _)] = sent(actions)
    assert ack.message_type == MessageType.ACK and ack.yiaddr == IP and ack.ciaddr == ZERO
    assert HostnameLearned(KEY, "alpha") in actions
    assert LeaseBound(KEY, IP, MAC, "alpha", 3603.0) in actions
    assert [lease.ip for lease in server.leases()] == [IP]
    assert server.next_deadline() == 3603.0


def test_broadcast_flag_and_client_identifier() -> None:
    server = DhcpServer(CONFIG)
    cid = b"\xff\x00\x01\x02\x03"
    (allocate,) = server.receive(frame(MessageType.DISCOVER, flags=0x8000, cid=cid), 0.0)
    assert isinstance(allocate, AllocateAddress) and allocate.client_key == cid
    [(offer, wire)] = sent(server.address_allocated(cid, IP, 0.0))
    assert wire[0:6] == BROADCAST_MAC and decode_udp_frame(wire).dst_ip == BCAST
    assert offer.client_id == cid


def test_offer_is_held_then_released_when_unclaimed() -> None:
    server = DhcpServer(CONFIG)
    server.receive(frame(MessageType.DISCOVER), 0.0)
    server.address_allocated(KEY, IP, 0.0)
    assert kinds(server.receive(frame(MessageType.DISCOVER, xid=43), 30.0)) == [MessageType.OFFER]
    assert server.next_deadline() == 90.0
    assert server.expire(89.0) == []
    assert server.expire(90.0) == [ReleaseAddress(KEY, IP, "unclaimed")]
    assert server.next_deadline() is None


def test_request_for_another_server_lapses_our_offer() -> None:
    server = DhcpServer(CONFIG)
    server.receive(frame(MessageType.DISCOVER), 0.0)
    server.address_allocated(KEY, IP, 0.0)
    other = IPv4Address("10.250.0.2").packed
    actions = server.receive(frame(MessageType.REQUEST, server=other, requested=IP.packed), 1.0)
    assert actions == [ReleaseAddress(KEY, IP, "unclaimed")]


def test_selecting_with_a_wrong_address_is_naked_and_the_offer_released() -> None:
    server = DhcpServer(CONFIG)
    server.receive(frame(MessageType.DISCOVER), 0.0)
    server.address_allocated(KEY, IP, 0.0)
    actions = server.receive(frame(MessageType.REQUEST, server=SERVER.packed, requested=OTHER.packed), 1.0)
    [(nak, wire)] = sent(actions)
    assert nak.message_type == MessageType.NAK and wire[0:6] == BROADCAST_MAC
    assert ReleaseAddress(KEY, IP, "unclaimed") in actions
    assert server.leases() == []


def test_renewing_and_rebinding_extend_the_lease_by_unicast() -> None:
    server = bound(DhcpServer(CONFIG))
    renew = server.receive(frame(MessageType.REQUEST, ciaddr=IP, to=SERVER), 1800.0)
    [(ack, wire)] = sent(renew)
    assert ack.ciaddr == IP and ack.yiaddr == IP
    assert wire[0:6] == MAC and decode_udp_frame(wire).dst_ip == IP
    assert server.leases()[0].expires_at == 5400.0
    rebind = server.receive(frame(MessageType.REQUEST, ciaddr=IP), 3200.0)
    assert kinds(rebind) == [MessageType.ACK]
    assert (
        server.counters.by_state["bound:renewing"] == 1 and server.counters.by_state["bound:rebinding"] == 1
    )


def test_renewing_for_an_address_not_ours_is_naked() -> None:
    server = bound(DhcpServer(CONFIG))
    assert kinds(server.receive(frame(MessageType.REQUEST, ciaddr=OTHER, to=SERVER), 10.0)) == [
        MessageType.NAK
    ]
    assert [lease.ip for lease in server.leases()] == [IP], "the lease itself stays"


def test_init_reboot_known_wrong_and_outside_the_subnet() -> None:
    server = bound(DhcpServer(CONFIG))
    assert kinds(server.receive(frame(MessageType.REQUEST, requested=IP.packed), 5.0)) == [MessageType.ACK]
    assert kinds(server.receive(frame(MessageType.REQUEST, requested=OTHER.packed), 6.0)) == [MessageType.NAK]
    outside = IPv4Address("192.168.1.5").packed
    fresh = DhcpServer(CONFIG)
    assert kinds(fresh.receive(frame(MessageType.REQUEST, requested=outside), 0.0)) == [MessageType.NAK]
    assert kinds(fresh.receive(frame(MessageType.REQUEST, requested=SERVER.packed), 0.0)) == [MessageType.NAK]


def test_init_reboot_without_record_asks_the_allocator() -> None:
    server = DhcpServer(CONFIG)
    (allocate,) = server.receive(frame(MessageType.REQUEST, requested=IP.packed), 0.0)
    assert allocate == AllocateAddress(KEY, IP, None)
    assert server.receive(frame(MessageType.REQUEST, requested=IP.packed), 1.0) == []
    assert kinds(server.allocation_failed(KEY, 2.0)) == [MessageType.NAK]
    server.receive(frame(MessageType.REQUEST, requested=IP.packed), 3.0)
    actions = server.address_allocated(KEY, OTHER, 4.0)
    assert kinds(actions) == [MessageType.NAK] and ReleaseAddress(KEY, OTHER, "unwanted") in actions


def test_failed_allocation_leaves_a_discover_unanswered() -> None:
    server = DhcpServer(CONFIG)
    server.receive(frame(MessageType.DISCOVER), 0.0)
    assert server.allocation_failed(KEY, 1.0) == []
    assert isinstance(server.receive(frame(MessageType.DISCOVER), 2.0)[0], AllocateAddress)


def test_a_late_allocation_is_handed_back() -> None:
    server = DhcpServer(CONFIG)
    server.receive(frame(MessageType.DISCOVER), 0.0)
    assert server.expire(10.0) == [] and server.next_deadline() is None
    assert server.address_allocated(KEY, IP, 11.0) == [ReleaseAddress(KEY, IP, "unwanted")]
    assert server.allocation_failed(KEY, 11.0) == []


def test_an_address_held_by_another_client_is_not_offered_twice() -> None:
    server = bound(DhcpServer(CONFIG))
    other_mac = bytes.fromhex("020000000003")
    server.receive(frame(MessageType.DISCOVER, mac=other_mac), 1.0)
    assert server.address_allocated(b"\x01" + other_mac, IP, 1.0) == []


def test_discover_from_a_bound_client_offers_its_address_at_once() -> None:
    server = bound(DhcpServer(CONFIG))
    assert kinds(server.receive(frame(MessageType.DISCOVER, xid=7), 100.0)) == [MessageType.OFFER]
    assert server.expire(200.0) == [], "the offer lapses but the lease stays"
    assert [lease.ip for lease in server.leases()] == [IP]


def test_release_and_decline() -> None:
    server = bound(DhcpServer(CONFIG))
    assert server.receive(frame(MessageType.RELEASE, ciaddr=OTHER, to=SERVER), 5.0) == []
    actions = server.receive(frame(MessageType.RELEASE, ciaddr=IP, to=SERVER), 5.0)
    assert actions == [ReleaseAddress(KEY, IP, "released")] and server.leases() == []
    server = bound(DhcpServer(CONFIG))
    assert server.receive(frame(MessageType.DECLINE, requested=IP.packed, server=SERVER.packed), 5.0) == [
        AddressDeclined(KEY, IP)
    ]
    assert server.leases() == []
    assert server.receive(frame(MessageType.DECLINE, requested=IP.packed), 6.0) == []


def test_inform_gets_configuration_without_a_lease() -> None:
    server = DhcpServer(CONFIG)
    [(ack, wire)] = sent(server.receive(frame(MessageType.INFORM, ciaddr=OTHER, to=SERVER), 0.0))
    assert ack.message_type == MessageType.ACK and ack.yiaddr == ZERO and ack.ciaddr == OTHER
    assert ack.option(Opt.LEASE_TIME) is None and ack.option(Opt.DNS_SERVERS) == SERVER.packed
    assert decode_udp_frame(wire).dst_ip == OTHER and server.leases() == []


def test_lease_expiry_releases_the_address() -> None:
    server = bound(DhcpServer(CONFIG))
    assert server.expire(3599.0) == []
    assert server.expire(3600.0) == [ReleaseAddress(KEY, IP, "expired")]
    assert server.leases() == []
    assert kinds(server.receive(frame(MessageType.REQUEST, ciaddr=IP, to=SERVER), 3601.0)) == []


def test_leases_survive_export_and_import() -> None:
    server = bound(DhcpServer(CONFIG), now=1000.0)
    records = server.export_leases(2000.0)
    assert records == [
        {"client_key": KEY.hex(), "ip": str(IP), "mac": MAC.hex(), "hostname": "alpha", "remaining_s": 2600.0}
    ]
    restarted = DhcpServer(CONFIG)
    assert restarted.import_leases(records, 10.0) == [LeaseBound(KEY, IP, MAC, "alpha", 2610.0)]
    assert kinds(restarted.receive(frame(MessageType.DISCOVER), 11.0)) == [MessageType.OFFER]
    with pytest.raises(ValueError):
        restarted.import_leases([{**records[0], "ip": "10.9.9.9"}], 0.0)
    with pytest.raises(ValueError):
        restarted.import_leases([{**records[0], "mac": "zz"}], 0.0)


def test_hostnames_are_validated_and_option_81_is_read() -> None:
    server = DhcpServer(CONFIG)
    (allocate,) = server.receive(frame(MessageType.DISCOVER, host=b"bad_name!"), 0.0)
    assert isinstance(allocate, AllocateAddress) and allocate.hostname is None
    fqdn = bytes([0x04, 0, 0]) + b"\x05delta\x04ipop\x00"
    msg = DhcpMessage(1, 9, MAC + b"\x00" * 10, ((53, b"\x01"), (81, fqdn)))
    wire = udp_frame(MAC, BROADCAST_MAC, ZERO, BCAST, src_port=68, dst_port=67, payload=msg.encode())
    (allocate,) = DhcpServer(CONFIG).receive(wire, 0.0)
    assert isinstance(allocate, AllocateAddress) and allocate.hostname == "delta"


def test_garbage_relayed_and_foreign_messages_are_counted_and_dropped() -> None:
    server = DhcpServer(CONFIG)
    relayed = DhcpMessage(1, 1, MAC + b"\x00" * 10, ((53, b"\x01"),), giaddr=OTHER).encode()
    reply = DhcpMessage(2, 1, MAC + b"\x00" * 10, ((53, b"\x02"),)).encode()
    no_type = DhcpMessage(1, 1, MAC + b"\x00" * 10, ()).encode()
    for payload in (relayed, reply, no_type):
        wire = udp_frame(MAC, BROADCAST_MAC, ZERO, BCAST, src_port=68, dst_port=67, payload=payload)
        assert server.receive(wire, 0.0) == []
    assert server.receive(b"\x00" * 100, 0.0) == []
    assert server.counters.ignored == 3 and server.counters.malformed == 1


def test_misuse_is_loud() -> None:
    with pytest.raises(ValueError):
        DhcpServerConfig(server_ip=IPv4Address("10.1.0.1"), server_mac=SERVER_MAC, subnet=SUBNET)
    with pytest.raises(ValueError):
        DhcpServerConfig(server_ip=SERVER, server_mac=b"\x00", subnet=SUBNET)
    with pytest.raises(ValueError):
        DhcpServer(CONFIG).address_allocated(KEY, SERVER, 0.0)


# -- property: any sequence ---------------------------------------------------------------------------

MACS = [bytes.fromhex(f"0200000000{i:02x}") for i in range(1, 4)]
ADDRESSES = [IPv4Address(f"10.250.0.{i}") for i in range(100, 104)]
step = st.one_of(
    st.tuples(
        st.just("msg"),
        st.sampled_from(list(MessageType)),
        st.sampled_from(MACS),
        st.sampled_from([*ADDRESSES, None]),
        st.sampled_from([SERVER, IPv4Address("10.250.0.2"), None]),
        st.booleans(),
    ),
    st.tuples(st.just("alloc"), st.sampled_from(MACS), st.sampled_from([*ADDRESSES, None])),
    st.tuples(st.just("tick"), st.sampled_from([1.0, 20.0, 61.0, 1900.0, 4000.0])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40))
def test_no_sequence_breaks_the_server(steps: list[tuple[object, ...]]) -> None:
    server = DhcpServer(CONFIG)
    now = 0.0
    for s in steps:
        if s[0] == "tick":
            now += float(s[1])  # type: ignore[arg-type]
            actions = server.expire(now)
        elif s[0] == "alloc":
            _, mac, ip = s
            key = b"\x01" + mac  # type: ignore[operator]
            actions = (
                server.allocation_failed(key, now) if ip is None else server.address_allocated(key, ip, now)  # type: ignore[arg-type]
            )
        else:
            _, kind, mac, ip, server_id, renewing = s
            opts: dict[str, bytes] = {}
            ciaddr = ZERO
            if ip is not None and renewing:
                ciaddr = ip  # type: ignore[assignment]
            elif ip is not None:
                opts["requested"] = ip.packed  # type: ignore[attr-defined]
            if server_id is not None:
                opts["server"] = server_id.packed  # type: ignore[attr-defined]
            actions = server.receive(frame(kind, mac=mac, ciaddr=ciaddr, **opts), now)  # type: ignore[arg-type]
        for message, _ in sent(actions):
            assert message.op == 2 and message.message_type in (
                MessageType.OFFER,
                MessageType.ACK,
                MessageType.NAK,
            )
        holders: dict[IPv4Address, bytes] = {}
        for lease in server.leases():
            if lease.expires_at > now:
                assert holders.setdefault(lease.ip, lease.client_key) == lease.client_key, (
                    "one address, two leases"
                )


def test_requests_unicast_to_another_server_are_not_ours() -> None:
    server = bound(DhcpServer(CONFIG))
    elsewhere = IPv4Address("10.250.0.2")
    assert server.receive(frame(MessageType.REQUEST, ciaddr=IP, to=elsewhere), 10.0) == []
    assert server.receive(frame(MessageType.RELEASE, ciaddr=IP, to=elsewhere), 10.0) == []
    assert [lease.ip for lease in server.leases()] == [IP]
