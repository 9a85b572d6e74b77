"""LAN beacon and punch-probe codecs (round trips, MAC, fuzzing), the beacon scheduler and directory."""

from __future__ import annotations

import contextlib
import itertools
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nat import (
    BEACON_BYTES,
    PROBE_BYTES,
    Beacon,
    BeaconScheduler,
    DecodeError,
    LanDirectory,
    ProbeKind,
    PunchProbe,
    decode_beacon,
    decode_probe,
    encode_beacon,
    encode_probe,
    is_beacon,
    is_probe,
    is_stun,
)

KEY = b"k" * 32
ADDR = bytes(range(20))


def test_beacon_layout_and_round_trip() -> None:
    data = encode_beacon(Beacon(ADDR, 40000), KEY)
    assert len(data) == BEACON_BYTES == 40
    assert data[:2] == b"\xa1\x06" and data[2:22] == ADDR and data[22:24] == (40000).to_bytes(2, "big")
    assert is_beacon(data) and not is_stun(data) and not is_probe(data)
    assert decode_beacon(data, KEY) == Beacon(ADDR, 40000)


def test_beacon_wrong_key_or_tampering_rejected() -> None:
    data = encode_beacon(Beacon(ADDR, 40000), KEY)
    with pytest.raises(DecodeError):
        decode_beacon(data, b"other key")
    tampered = bytearray(data)
    tampered[5] ^= 1
    with pytest.raises(DecodeError):
        decode_beacon(bytes(tampered), KEY)
    with pytest.raises(ValueError):
        encode_beacon(Beacon(b"short", 1), KEY)
    with pytest.raises(ValueError):
        encode_beacon(Beacon(ADDR, 0), KEY)


def test_probe_layout_and_round_trip() -> None:
    for kind in ProbeKind:
        p = PunchProbe(kind, 2**64 - 1, 7)
        data = encode_probe(p, KEY)
        assert len(data) == PROBE_BYTES == 31 and data[:2] == b"\xa1\x05"
        assert is_probe(data) and not is_stun(data) and not is_beacon(data)
        assert decode_probe(data, KEY) == p
    with pytest.raises(DecodeError):
        decode_probe(encode_probe(PunchProbe(ProbeKind.PROBE, 1, 1), KEY), b"x")
    with pytest.raises(ValueError):
        encode_probe(PunchProbe(ProbeKind.PROBE, -1, 0), KEY)


def test_probe_unknown_kind_with_valid_mac_is_decode_error() -> None:
    from nat import mac

    body = bytes([0xA1, 0x05, 9]) + (1).to_bytes(8, "big") + (1).to_bytes(4, "big")
    with pytest.raises(DecodeError):
        decode_probe(body + mac(KEY, body), KEY)


@given(st.binary(min_size=20, max_size=20), st.integers(1, 65535), st.binary(max_size=40))
def test_beacon_round_trip_property(address: bytes, port: int, key: bytes) -> None:
    assert decode_beacon(encode_beacon(Beacon(address, port), key), key) == Beacon(address, port)


@given(st.sampled_from(list(ProbeKind)), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1))
def test_probe_round_trip_property(kind: ProbeKind, token: int, seq: int) -> None:
    assert decode_probe(encode_probe(PunchProbe(kind, token, seq), KEY), KEY) == PunchProbe(kind, token, seq)


@settings(max_examples=400)
@given(st.binary(max_size=64), st.data())
def test_fuzz_only_decode_error(data: bytes, draw: st.DataObject) -> None:
    if draw.draw(st.booleans()):
        valid = bytearray(encode_beacon(Beacon(ADDR, 1), KEY))
    else:
        valid = bytearray(encode_probe(PunchProbe(ProbeKind.PROBE, 2, 3), KEY))
    valid[draw.draw(st.integers(0, len(valid) - 1))] ^= draw.draw(st.integers(1, 255))
    for candidate in (data, bytes(valid)):
        with contextlib.suppress(DecodeError):
            decode_beacon(candidate, KEY)
        with contextlib.suppress(DecodeError):
            decode_probe(candidate, KEY)


def test_scheduler_beacons_at_start_then_every_interval_with_jitter() -> None:
    s = BeaconScheduler(Random(1), 100.0, interval_s=30.0)
    assert s.get_timer() == 100.0 and s.due(100.0)
    assert not s.due(100.5)
    times = [100.0]
    now = 100.0
    for _ in range(50):
        now = s.get_timer()
        assert s.due(now)
        times.append(now)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(27.0 - 1e-9 <= g <= 33.0 + 1e-9 for g in gaps)
    assert len({round(g, 6) for g in gaps}) > 10  # jittered


def test_scheduler_answers_newcomers_early_but_rate_limited() -> None:
    s = BeaconScheduler(Random(2), 0.0, interval_s=30.0, min_gap_s=1.0, answer_spread_s=0.5)
    assert s.due(0.0)
    s.answer_newcomer(0.1)
    assert 1.0 <= s.get_timer() <= 1.0 + 1e-9  # not within min_gap of the last beacon
    assert s.due(s.get_timer())
    s.answer_newcomer(10.0)
    assert 10.0 <= s.get_timer() <= 10.5


def test_directory_learns_ignores_self_and_expires() -> None:
    d = LanDirectory(ADDR, interval_s=10.0)
    other = bytes(20)
    assert d.heard(Beacon(ADDR, 1), "192.168.1.2", 0.0) is None
    new = d.heard(Beacon(other, 40000), "192.168.1.3", 0.0)
    assert new is not None and new.endpoint == ("192.168.1.3", 40000)
    assert d.heard(Beacon(other, 40000), "192.168.1.3", 5.0) is None  # nothing new
    moved = d.heard(Beacon(other, 40001), "192.168.1.3", 6.0)
    assert moved is not None and moved.endpoint[1] == 40001
    assert [p.address for p in d.peers(20.0)] == [other]
    assert d.peers(6.0 + 36.0) == []
