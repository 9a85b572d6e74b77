"""The virtual network's DHT values and control messages: round trips, properties, and fuzzing (random
and mutated bytes raise only WireError); and the mapping cache's state machine."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipop.mapping import Entry, MappingCache
from ipop.vnwire import (
    KIND_BROADCAST,
    KIND_UNICAST,
    KIND_UNICAST_VNET,
    MAX_CLIENT_KEY,
    MEMBER_VALUE,
    AddressClaim,
    Hello,
    NameRecord,
    NoMapping,
    WireError,
    address_key,
    decode_control,
    is_member_value,
    members_key,
    name_key,
    namespace_tag,
    packet_header,
)
from overlay import Address

TAG = namespace_tag("default")
ips = st.integers(0, 2**32 - 1).map(IPv4Address)


@given(st.binary(max_size=MAX_CLIENT_KEY))
def test_address_claims_round_trip(client: bytes) -> None:
    claim = AddressClaim(client)
    assert AddressClaim.decode(claim.encode()) == claim
    assert claim.static == (client == b"")


@given(ips)
def test_name_records_and_control_messages_round_trip(ip: IPv4Address) -> None:
    assert NameRecord.decode(NameRecord(ip).encode()) == NameRecord(ip)
    assert decode_control(NoMapping(ip).encode(TAG), TAG) == NoMapping(ip)
    assert decode_control(Hello().encode(TAG), TAG) == Hello()


def test_keys_headers_and_tags() -> None:
    ip = IPv4Address("10.250.0.7")
    assert address_key("ns", ip) == b"dhcp:ns:10.250.0.7"
    assert name_key("ns", "bob") == b"dns:ns:bob"
    assert members_key("ns") == b"bcast:ns"
    assert namespace_tag("a") != namespace_tag("b") and len(TAG) == 4
    assert packet_header(KIND_UNICAST, TAG) == b"\x11" + TAG
    assert packet_header(KIND_BROADCAST, TAG) == b"\x12" + TAG
    assert packet_header(KIND_UNICAST_VNET, TAG) == b"\x13" + TAG
    assert is_member_value(MEMBER_VALUE) and not is_member_value(b"")
    with pytest.raises(ValueError):
        packet_header(4, TAG)
    with pytest.raises(ValueError):
        AddressClaim(bytes(MAX_CLIENT_KEY + 1)).encode()


def test_refusals() -> None:
    ip = IPv4Address("10.250.0.7")
    with pytest.raises(WireError):
        decode_control(NoMapping(ip).encode(namespace_tag("other")), TAG)  # another namespace
    with pytest.raises(WireError):
        AddressClaim.decode(NameRecord(ip).encode())  # another kind of value
    with pytest.raises(WireError):
        NameRecord.decode(b"\x93\x02\xa1n\xc4\x04\n\xfa\x00\x07")  # version 2
    with pytest.raises(WireError):
        NameRecord.decode(b"\x93\x01\xa1n\xc4\x03\n\xfa\x00")  # three address bytes
    with pytest.raises(WireError):
        decode_control(bytes(300), TAG)  # longer than any control message


DECODERS = (AddressClaim.decode, NameRecord.decode, lambda data: decode_control(data, TAG))
VALID = (
    AddressClaim(b"\x01\x02\x00\x00\x00\x00\x02").encode(),
    AddressClaim(b"").encode(),
    NameRecord(IPv4Address("10.250.3.4")).encode(),
    NoMapping(IPv4Address("10.250.3.4")).encode(TAG),
    Hello().encode(TAG),
)


def _only_wire_errors(data: bytes) -> None:
    for decode in DECODERS:
        with contextlib.suppress(WireError):
            decode(data)


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_wire_errors(data: bytes) -> None:
    _only_wire_errors(data)


def test_mutated_values_raise_only_wire_errors() -> None:
    rng = Random(5)
    for _ in range(20_000):
        data = bytearray(rng.choice(VALID))
        for _ in range(rng.randint(1, 4)):
            choice = rng.random()
            if choice < 0.5 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif choice < 0.75:
                data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
            elif data:
                del data[rng.randrange(len(data))]
        _only_wire_errors(bytes(data))


# -- the mapping cache -----------------------------------------------------------------------------------

IP = b"\n\xfa\x00\x07"
HOLDER = Address(42)


def cache() -> MappingCache[str]:
    return MappingCache(positive_ttl_s=100.0, negative_ttl_s=3.0, max_waiting=2, max_entries=3)


def test_lookup_then_found_then_refresh_then_expiry() -> None:
    c = cache()
    entry, look = c.want(IP, 0.0)
    assert entry is not None and look and entry.state is Entry.LOOKING
    assert c.wait(entry, "p1") and c.wait(entry, "p2") and not c.wait(entry, "p3")
    assert c.want(IP, 0.1) == (entry, False)  # one lookup at a time
    assert c.resolved(IP, HOLDER, 1.0) == ["p1", "p2"]
    assert c.routes == {IP: HOLDER} and c.next_expiry() == 51.0
    c.expire(51.0)  # half the TTL: off the fast path, still known
    assert c.routes == {} and c.state(IP) is Entry.FOUND
    entry, look = c.want(IP, 52.0)
    assert look and entry is not None and entry.holder == HOLDER  # a background refresh
    c.resolved(IP, HOLDER, 53.0)
    assert c.routes == {IP: HOLDER}
    c.expire(153.0)
    assert c.state(IP) is None


def test_negative_entries_failures_and_forgetting() -> None:
    c = cache()
    c.want(IP, 0.0)
    assert c.resolved(IP, None, 0.5) == []
    assert c.state(IP) is Entry.ABSENT and c.want(IP, 1.0)[1] is False
    assert c.want(IP, 3.5)[1] is True  # the negative entry lapsed
    entry, _ = c.want(IP, 3.6)
    assert entry is not None and c.wait(entry, "p")
    assert c.failed(IP) == ["p"] and c.state(IP) is None
    c.want(IP, 4.0)
    c.resolved(IP, HOLDER, 4.0)
    assert c.forget_holder(HOLDER) == [IP] and c.state(IP) is None


def test_the_cache_stays_within_its_size() -> None:
    c = cache()
    for i in range(3):
        c.want(bytes([10, 250, 0, i]), 0.0)
        c.resolved(bytes([10, 250, 0, i]), HOLDER, float(i))
    entry, look = c.want(bytes([10, 250, 0, 9]), 5.0)
    assert entry is not None and look and len(c.entries) == 3
    assert bytes([10, 250, 0, 0]) not in c.entries  # the one that expires first went
