"""STUN codec: round trips, RFC 5769-style checks, the attribute rules of RFC 8489, fuzzing, and golden
datagrams captured from coturn."""

from __future__ import annotations

import contextlib
import struct
import zlib
from pathlib import Path
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nat import (
    CHANGE_IP,
    CHANGE_PORT,
    DecodeError,
    StunClass,
    StunMessage,
    binding_error,
    binding_request,
    binding_success,
    decode_stun,
    encode_stun,
    is_stun,
)

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden" / "stun"
TID = bytes(range(12))


def _attr(atype: int, value: bytes) -> bytes:
    return struct.pack("!HH", atype, len(value)) + value + b"\0" * (-len(value) % 4)


def _message(mtype: int, attrs: bytes, tid: bytes = TID) -> bytes:
    return struct.pack("!HHI", mtype, len(attrs), 0x2112A442) + tid + attrs


def test_binding_request_layout() -> None:
    data = binding_request(TID, fingerprint=False)
    assert data == bytes.fromhex("0001 0000 2112a442") + TID
    assert is_stun(data)


def test_success_round_trip_ipv4_and_ipv6() -> None:
    for mapped in (("192.0.2.1", 32853), ("2001:db8:1234:5678:11:2233:4455:6677", 32853)):
        data = binding_success(TID, mapped, response_origin=("198.51.100.10", 3478), software="ipop test")
        msg = decode_stun(data)
        assert msg.cls is StunClass.SUCCESS and msg.method == 1 and msg.transaction_id == TID
        assert msg.xor_mapped == mapped and msg.mapped_endpoint == mapped
        assert msg.response_origin == ("198.51.100.10", 3478)
        assert msg.software == "ipop test" and msg.fingerprint


def test_xor_mapped_address_matches_rfc5769_sample() -> None:
    # RFC 5769 section 2.2's sample response maps 192.0.2.1:32853; its XOR-MAPPED-ADDRESS value is
    # 0001 a147 e112 a643 with the cookie 2112a442 (independent of the transaction id for IPv4).
    data = binding_success(bytes.fromhex("b7e7a701bc34d686fa87dfae"), ("192.0.2.1", 32853), fingerprint=False)
    assert bytes.fromhex("0020 0008 0001 a147 e112 a643") in data


def test_xor_mapped_ipv6_uses_transaction_id() -> None:
    tid = bytes.fromhex("b7e7a701bc34d686fa87dfae")
    data = binding_success(tid, ("2001:db8:1234:5678:11:2233:4455:6677", 32853), fingerprint=False)
    # RFC 5769 section 2.3's sample response value for the same address.
    assert bytes.fromhex("0002 a147 0113 a9fa a5d3 f179 bc25 f4b5 bed2 b9d9") in data


def test_error_response_and_unknown_attributes() -> None:
    data = binding_error(TID, 420, "Unknown Attribute", unknown=(0x0024, 0x7FFF))
    msg = decode_stun(data)
    assert msg.cls is StunClass.ERROR
    assert msg.error == (420, "Unknown Attribute")
    assert msg.unknown_attributes == (0x0024, 0x7FFF)


def test_change_request_round_trip() -> None:
    msg = decode_stun(binding_request(TID, change=CHANGE_IP | CHANGE_PORT))
    assert msg.change_request == 6


def test_unknown_required_reported_and_optional_skipped() -> None:
    attrs = (
        _attr(0x7F01, b"abcd") + _attr(0xC001, b"xyz") + _attr(0x0001, bytes.fromhex("0001 1234 c0000201"))
    )
    msg = decode_stun(_message(0x0101, attrs))
    assert msg.unknown_required == (0x7F01,)
    assert msg.mapped == ("192.0.2.1", 0x1234)


def test_attributes_after_message_integrity_are_ignored_except_fingerprint() -> None:
    attrs = (
        _attr(0x0008, b"\0" * 20) + _attr(0x0001, bytes.fromhex("0001 1234 c0000201")) + _attr(0x7F01, b"")
    )
    msg = decode_stun(_message(0x0101, attrs))
    assert msg.mapped is None and msg.unknown_required == ()


def test_first_occurrence_wins() -> None:
    a = _attr(0x0001, bytes.fromhex("0001 0001 c0000201"))
    b = _attr(0x0001, bytes.fromhex("0001 0002 c0000202"))
    assert decode_stun(_message(0x0101, a + b)).mapped == ("192.0.2.1", 1)


def test_fingerprint_checked_and_must_be_last() -> None:
    data = bytearray(binding_request(TID))
    data[-1] ^= 1
    with pytest.raises(DecodeError, match="FINGERPRINT"):
        decode_stun(bytes(data))
    good = binding_request(TID)
    # Something after FINGERPRINT: fix the length so only the ordering rule can complain.
    tail = _attr(0x8022, b"late")
    bad = bytearray(good + tail)
    struct.pack_into("!H", bad, 2, len(bad) - 20)
    with pytest.raises(DecodeError):
        decode_stun(bytes(bad))


def test_fingerprint_value_is_crc32_xor_stun() -> None:
    data = binding_request(TID)
    crc = struct.unpack("!I", data[-4:])[0]
    assert crc == (zlib.crc32(data[:-8]) ^ 0x5354554E) & 0xFFFFFFFF


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 19,
        b"\xa1\x01" + b"\0" * 30,  # an overlay datagram
        _message(0x0101, b"")[:-1],
        struct.pack("!HHI", 0x0101, 0, 0xDEADBEEF) + TID,  # RFC 3489 message (no cookie)
        struct.pack("!HHI", 0x0101, 4, 0x2112A442) + TID,  # length past the end
        _message(0x0101, struct.pack("!HH", 0x0001, 200)),  # attribute past the end
        _message(0x0101, _attr(0x0020, b"\x00\x01\x00")),  # address too short
        _message(0x0101, _attr(0x0020, bytes.fromhex("0003 0001 c0000201"))),  # unknown family
        _message(0x0101, _attr(0x0001, bytes.fromhex("0002 0001 c0000201"))),  # IPv6 with 4 bytes
        _message(0x0111, _attr(0x0009, bytes.fromhex("0000 0799"))),  # error class 7
        _message(0x0101, _attr(0x000A, b"\x00\x01\x00")),  # odd UNKNOWN-ATTRIBUTES
        _message(0x0101, _attr(0x0003, b"\x00\x00")),  # short CHANGE-REQUEST
        _message(0x0101, _attr(0x8028, b"\0\0")),  # short FINGERPRINT
        b"\x00\x01\x05\xdc\x21\x12\xa4\x42" + TID + b"\0" * 1500,  # too long
    ],
)
def test_malformed_inputs_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_stun(data)


def test_is_stun_rejects_overlay_and_short_datagrams() -> None:
    assert not is_stun(b"\xa1\x04" + b"\0" * 40)
    assert not is_stun(b"\x00\x01\x00\x00\x21\x12\xa4\x42")
    assert not is_stun(binding_request(TID) + b"\0\0\0\0")


def test_encoder_refuses_misuse() -> None:
    with pytest.raises(ValueError):
        binding_request(b"short")
    with pytest.raises(ValueError):
        binding_error(TID, 200, "not an error")
    with pytest.raises(ValueError):
        binding_success(TID, ("192.0.2.1", 70000))
    with pytest.raises(ValueError):
        binding_request(TID, software="x" * 800)


endpoints_v4 = st.tuples(st.ip_addresses(v=4).map(str), st.integers(0, 65535))
endpoints_any = st.tuples(st.ip_addresses().map(str), st.integers(0, 65535))


messages = st.builds(
    StunMessage,
    cls=st.sampled_from(list(StunClass)),
    method=st.integers(0, 0xFFF),
    transaction_id=st.binary(min_size=12, max_size=12),
    xor_mapped=st.none() | endpoints_any,
    mapped=st.none() | endpoints_any,
    response_origin=st.none() | endpoints_v4,
    other_address=st.none() | endpoints_any,
    change_request=st.none() | st.integers(0, 2**32 - 1),
    software=st.none() | st.text(max_size=40),
    error=st.none() | st.tuples(st.integers(300, 699), st.text(max_size=30)),
    unknown_attributes=st.lists(st.integers(0, 0xFFFF), max_size=4).map(tuple),
    unknown_required=st.just(()),
    fingerprint=st.booleans(),
)


@given(messages)
def test_round_trip_property(msg: StunMessage) -> None:
    data = encode_stun(msg)
    assert is_stun(data)
    assert decode_stun(data) == msg


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_stun(data)


@settings(max_examples=300)
@given(st.data())
def test_fuzz_mutated_messages_only_decode_error(data: st.DataObject) -> None:
    base = bytearray(
        binding_success(TID, ("2001:db8::1", 4000), response_origin=("192.0.2.9", 3478), software="x")
        if data.draw(st.booleans())
        else binding_error(TID, 420, "no", unknown=(1, 2))
    )
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(base) - 1))
        base[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    for candidate in (bytes(base), bytes(base[:cut])):
        with contextlib.suppress(DecodeError):
            decode_stun(candidate)


def test_fuzz_seeded_mutations_without_fingerprint_reach_deep_paths() -> None:
    # Without FINGERPRINT most mutations get past the CRC and exercise the attribute decoders.
    rng = Random(6)
    base = binding_success(TID, ("2001:db8::1", 4000), other_address=("192.0.2.2", 3479), fingerprint=False)
    decoded = 0
    for _ in range(5000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(20, len(data))] = rng.randrange(256)
        try:
            decode_stun(bytes(data))
            decoded += 1
        except DecodeError:
            pass
    assert decoded > 100  # some mutations are still valid messages


# -- golden datagrams from coturn ---------------------------------------------------------------------


def _golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


def test_golden_coturn_client_request_decodes_and_re_encodes() -> None:
    data = _golden("coturn_client_binding_request.bin")
    msg = decode_stun(data)
    assert msg.cls is StunClass.REQUEST and msg.method == 1 and msg.change_request is None
    assert binding_request(msg.transaction_id, fingerprint=False) == data


def test_golden_coturn_change_request() -> None:
    msg = decode_stun(_golden("coturn_client_change_request.bin"))
    assert msg.cls is StunClass.REQUEST and msg.change_request == CHANGE_IP | CHANGE_PORT
    assert msg.unknown_required == ()  # RESPONSE-PORT is known (and irrelevant)


@pytest.mark.parametrize(
    ("name", "mapped", "origin"),
    [
        ("coturn_server_binding_success.bin", ("198.51.100.50", 34883), ("198.51.100.10", 3478)),
        ("coturn_server_change_success.bin", ("198.51.100.50", 33880), ("198.51.100.11", 3479)),
    ],
)
def test_golden_coturn_responses(name: str, mapped: tuple[str, int], origin: tuple[str, int]) -> None:
    data = _golden(name)
    msg = decode_stun(data)
    assert msg.cls is StunClass.SUCCESS
    assert msg.xor_mapped == mapped == msg.mapped
    assert msg.response_origin == origin
    assert msg.other_address == ("198.51.100.11", 3479)
    assert msg.software is not None and msg.software.startswith("Coturn")
    # Our encoder writes the attributes in coturn's order: the bytes match exactly.
    assert encode_stun(msg) == data
