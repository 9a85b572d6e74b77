"""The link wire format and key schedule: codec round trips, decoders that raise only their error on
any input, and the key derivations checked against an independent RFC 5869 HKDF written here from the
RFC's two equations with the standard library's HMAC."""

from __future__ import annotations

import hashlib
import hmac
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay import DATA_OVERHEAD, HS_FIN, HS_INIT, HS_RESP, MAGIC, LinkDecodeError
from overlay.linkwire import (
    FIN_BYTES,
    INIT_BYTES,
    RESP_BYTES,
    HsFin,
    HsInit,
    HsResp,
    decode_fin,
    decode_init,
    decode_resp,
    derive_netkey,
    encode_fin,
    encode_init,
    encode_resp,
    mac,
    mac_ok,
    session_keys,
    transcript_hash,
)

NETKEY = bytes(range(32))
u32 = st.integers(min_value=0, max_value=2**32 - 1)
key32 = st.binary(min_size=32, max_size=32)
sealed80 = st.binary(min_size=80, max_size=80)


def rfc5869(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block = b"", b""
    for i in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


def test_sizes_match_the_documented_layouts() -> None:
    assert (INIT_BYTES, RESP_BYTES, FIN_BYTES, DATA_OVERHEAD) == (87, 170, 86, 30)
    assert MAGIC == 0xA1


def test_realm_key_follows_the_specification_and_separates_realms_and_secrets() -> None:
    secret = b"correct horse battery staple"
    assert derive_netkey("lab", secret) == rfc5869(secret, b"ipop/realm/v1", b"lab", 32)
    keys = {derive_netkey(r, s) for r in ("lab", "lab2", "Lab") for s in (secret, secret + b"!")}
    assert len(keys) == 6


def test_session_keys_and_transcript_follow_the_specification() -> None:
    th = transcript_hash(b"init", b"resp")
    assert th == hashlib.sha256(b"ipop-hs-v1initresp").digest()
    k_i2r, k_r2i = session_keys(NETKEY, b"s" * 32, th)
    okm = rfc5869(b"s" * 32, NETKEY, b"ipop link keys v1" + th, 64)
    assert (k_i2r, k_r2i) == (okm[:32], okm[32:])
    assert k_i2r != k_r2i


def test_mac_is_truncated_hmac_sha256_and_detects_any_change() -> None:
    body = b"\xa1\x01" + bytes(range(69))
    tag = mac(NETKEY, body)
    assert tag == hmac.new(NETKEY, body, hashlib.sha256).digest()[:16]
    packet = body + tag
    assert mac_ok(NETKEY, packet)
    for i in range(len(packet)):
        changed = bytearray(packet)
        changed[i] ^= 0x01
        assert not mac_ok(NETKEY, bytes(changed))
    assert not mac_ok(bytes(32), packet)


@given(st.integers(0, 255), u32, key32, key32)
def test_init_round_trip(suite: int, index: int, eph: bytes, ident: bytes) -> None:
    msg = HsInit(suite, index, eph, ident)
    packet = encode_init(msg, NETKEY)
    assert len(packet) == INIT_BYTES and packet[:2] == bytes([MAGIC, HS_INIT])
    assert mac_ok(NETKEY, packet)
    assert decode_init(packet) == msg


@given(u32, u32, key32, key32, sealed80)
def test_resp_round_trip(sender: int, receiver: int, eph: bytes, ident: bytes, sealed: bytes) -> None:
    msg = HsResp(sender, receiver, eph, ident, sealed)
    packet = encode_resp(msg, NETKEY)
    assert len(packet) == RESP_BYTES and packet[:2] == bytes([MAGIC, HS_RESP])
    assert mac_ok(NETKEY, packet)
    assert decode_resp(packet) == msg


@given(u32, sealed80)
def test_fin_round_trip(receiver: int, sealed: bytes) -> None:
    msg = HsFin(receiver, sealed)
    packet = encode_fin(msg)
    assert len(packet) == FIN_BYTES and packet[:2] == bytes([MAGIC, HS_FIN])
    assert decode_fin(packet) == msg


def test_encoders_refuse_wrong_sized_fields() -> None:
    with pytest.raises(ValueError):
        encode_init(HsInit(1, 1, b"short", bytes(32)), NETKEY)
    with pytest.raises(ValueError):
        encode_resp(HsResp(1, 1, bytes(32), bytes(32), b"x" * 79), NETKEY)
    with pytest.raises(ValueError):
        encode_fin(HsFin(1, b"x" * 81))


DECODERS = (decode_init, decode_resp, decode_fin)


def _only_decode_error(data: bytes) -> None:
    for decode in DECODERS:
        try:
            decode(data)
        except LinkDecodeError as error:
            assert error.reason == "malformed"


@given(st.binary(max_size=300))
def test_decoders_raise_only_their_error_on_random_bytes(data: bytes) -> None:
    _only_decode_error(data)


@given(st.binary(max_size=300), st.sampled_from((1, 2, 3, 4, 5, 6, 0, 255)))
def test_decoders_raise_only_their_error_on_framed_random_bytes(data: bytes, kind: int) -> None:
    _only_decode_error(bytes([MAGIC, kind]) + data)


def test_decoders_on_mutated_valid_messages() -> None:
    rng = Random(7)
    valid = [
        encode_init(HsInit(1, 5, bytes(32), bytes(32)), NETKEY),
        encode_resp(HsResp(1, 2, bytes(32), bytes(32), bytes(80)), NETKEY),
        encode_fin(HsFin(3, bytes(80))),
    ]
    for _ in range(20_000):
        packet = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 4)):
            roll = rng.random()
            if roll < 0.6:
                packet[rng.randrange(len(packet))] = rng.randrange(256)
            elif roll < 0.8:
                del packet[rng.randrange(len(packet)) :]
            else:
                packet += rng.randbytes(rng.randint(1, 8))
            if not packet:
                break
        _only_decode_error(bytes(packet))
