"""The overlay's inner message codecs: round trips, and hostile input yields only WireError."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay import Address
from overlay.wire import (
    FLAG_EXACT,
    FLAG_EXCLUDE_SRC,
    KIND_CONTROL,
    Close,
    Connect,
    ConnectReply,
    Hello,
    Neighbour,
    Neighbours,
    Ping,
    Pong,
    Roles,
    RouteError,
    WireError,
    decode_control,
    decode_overlay,
    decode_routed,
    encode_control,
    encode_overlay,
    encode_routed,
)

addresses = st.integers(min_value=0, max_value=(1 << 160) - 1).map(Address)
hosts = st.sampled_from(["10.0.0.1", "192.168.1.2", "203.0.113.6", "::1", "2001:db8::7"])
endpoints = st.tuples(hosts, st.integers(0, 65535))
endpoint_lists = st.lists(endpoints, max_size=8).map(tuple)
neighbours = st.lists(st.builds(Neighbour, addresses, endpoint_lists), max_size=16).map(tuple)
controls = st.one_of(
    st.builds(Hello, st.integers(0, 255), endpoint_lists, st.none() | endpoints),
    st.builds(Ping, st.integers(0, 2**64 - 1)),
    st.builds(Pong, st.integers(0, 2**64 - 1), st.none() | endpoints),
    st.builds(Close, st.text(max_size=64)),
    st.builds(Neighbours, neighbours),
    st.builds(Roles, st.integers(0, 255)),
)
overlays = st.one_of(
    st.builds(Connect, st.integers(0, 2**62), st.integers(0, 255), endpoint_lists, st.none() | addresses),
    st.builds(ConnectReply, st.integers(0, 2**62), endpoint_lists, neighbours),
    st.builds(RouteError, addresses, st.integers(0, 255)),
)


@given(controls)
def test_control_round_trip(msg: object) -> None:
    data = encode_control(msg)  # type: ignore[arg-type]
    assert data[0] == KIND_CONTROL
    assert decode_control(data[1:]) == msg


@given(overlays)
def test_overlay_round_trip(msg: object) -> None:
    assert decode_overlay(encode_overlay(msg)) == msg  # type: ignore[arg-type]


@given(
    st.integers(0, 7),
    st.integers(0, 255),
    st.integers(0, 255),
    addresses,
    addresses,
    st.none() | addresses,
    st.binary(max_size=64),
)
def test_routed_round_trip(
    flags: int, service: int, hops: int, src: Address, dest: Address, via: Address | None, payload: bytes
) -> None:
    flags &= FLAG_EXACT | FLAG_EXCLUDE_SRC
    msg = decode_routed(encode_routed(flags, service, hops, src, dest, via, payload))
    assert (msg.flags & (FLAG_EXACT | FLAG_EXCLUDE_SRC), msg.service, msg.hops) == (flags, service, hops)
    assert (msg.src, msg.dest, msg.via, msg.payload) == (src, dest, via, payload)
    assert decode_routed(msg.encode()) == msg


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_wire_error(data: bytes) -> None:
    for decode in (decode_control, decode_overlay, decode_routed):
        with contextlib.suppress(WireError):
            decode(data)


def test_mutated_messages_raise_only_wire_error() -> None:
    rng = random.Random(7)
    seeds = [
        encode_control(Hello(3, (("10.0.0.1", 5800),), ("1.2.3.4", 9)))[1:],
        encode_control(Neighbours((Neighbour(Address(5), (("10.0.0.2", 1),)),)))[1:],
        encode_overlay(Connect(1, 2, (("10.0.0.1", 5800),), Address(9))),
        encode_overlay(ConnectReply(1, (), (Neighbour(Address(1), ()),))),
    ]
    for _ in range(20000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(3)
            if op == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op == 1 and data:
                del data[rng.randrange(len(data))]
            else:
                data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        for decode in (decode_control, decode_overlay):
            with contextlib.suppress(WireError):
                decode(bytes(data))


def test_oversized_and_wrong_shapes_refused() -> None:
    with pytest.raises(WireError):
        decode_control(b"\x91" + b"\x00" * 5000)
    with pytest.raises(WireError):
        decode_control(encode_control(Ping(1))[1:] + b"\x00")  # trailing bytes
    with pytest.raises(WireError):
        decode_routed(b"\x03\x04\x00\x00" + bytes(40))  # VIA flag without a via address


def test_decoded_addresses_and_endpoints_are_shared_and_the_sharing_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Equal values decoded from two messages are one object (the simulator's memory depends on it);
    the sharing dict never grows past its bound, whatever arrives."""
    from overlay import wire

    entries = (Neighbour(Address(12345 << 100), (("11.0.0.7", 5800), ("192.168.1.2", 5800))),)
    body = encode_control(Neighbours(entries))[1:]
    a, b = decode_control(body), decode_control(body)
    assert isinstance(a, Neighbours) and isinstance(b, Neighbours)
    assert a == b
    assert a.entries[0].address is b.entries[0].address
    assert a.entries[0].candidates is b.entries[0].candidates
    assert a.entries[0].candidates[0] is b.entries[0].candidates[0]

    monkeypatch.setattr(wire, "SHARED_MAX", 8)
    monkeypatch.setattr(wire, "_shared_values", {})
    for i in range(50):
        ep = (f"10.0.0.{i}", 1000 + i)
        got = decode_control(encode_control(Neighbours((Neighbour(Address(i + 1), (ep,)),)))[1:])
        assert isinstance(got, Neighbours) and got.entries[0].candidates == (ep,)
        assert len(wire._shared_values) <= 8
