"""The virtio-net header codec: round trips, properties, the checks a peer's header must pass, golden
headers from a real offloading TAP, and fuzzing (only DecodeError escapes)."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.vnproto.vnetgolden import CAPTURES, vframes
from vnproto import (
    GSO_ECN,
    NO_OFFLOAD,
    VNET_HDR_LEN,
    DecodeError,
    GsoType,
    VirtioNetHdr,
    VnetFlag,
    vnet_fields,
)

u16 = st.integers(0, 0xFFFF)


def test_layout_is_little_endian_and_ten_bytes() -> None:
    hdr = VirtioNetHdr(
        flags=VnetFlag.NEEDS_CSUM,
        gso_type=GsoType.TCPV4,
        hdr_len=66,
        gso_size=1448,
        csum_start=34,
        csum_offset=16,
    )
    assert hdr.encode() == bytes([1, 1, 66, 0, 0xA8, 0x05, 34, 0, 16, 0])
    assert len(NO_OFFLOAD) == VNET_HDR_LEN == 10
    assert VirtioNetHdr.decode(NO_OFFLOAD, 60) == VirtioNetHdr()


def test_properties_name_the_bits() -> None:
    hdr = VirtioNetHdr(
        flags=1, gso_type=GsoType.TCPV6 | GSO_ECN, gso_size=1428, csum_start=54, csum_offset=16
    )
    assert hdr.needs_csum and not hdr.data_valid and hdr.ecn and hdr.gso is GsoType.TCPV6
    assert VirtioNetHdr(flags=VnetFlag.DATA_VALID).data_valid


valid_headers = st.one_of(
    st.builds(VirtioNetHdr, flags=st.sampled_from([0, 2])),
    st.builds(
        VirtioNetHdr,
        flags=st.just(1),
        gso_type=st.just(0),
        hdr_len=u16,
        csum_start=st.integers(14, 2000),
        csum_offset=st.integers(0, 100),
    ),
    st.builds(
        VirtioNetHdr,
        flags=st.just(1),
        gso_type=st.sampled_from([1, 4, 0x81, 0x84]),
        hdr_len=u16,
        gso_size=st.integers(1, 0xFFFF),
        csum_start=st.integers(14, 2000),
        csum_offset=st.just(16),
    ),
    st.builds(
        VirtioNetHdr,
        flags=st.just(1),
        gso_type=st.just(5),
        hdr_len=u16,
        gso_size=st.integers(1, 0xFFFF),
        csum_start=st.integers(14, 2000),
        csum_offset=st.just(6),
    ),
)


@given(valid_headers)
def test_round_trip(hdr: VirtioNetHdr) -> None:
    data = hdr.encode()
    assert VirtioNetHdr.decode(data) == hdr
    assert VirtioNetHdr.decode(data, 2200) == hdr
    assert vnet_fields(data) == (
        hdr.flags,
        hdr.gso_type,
        hdr.hdr_len,
        hdr.gso_size,
        hdr.csum_start,
        hdr.csum_offset,
    )


@given(st.binary(min_size=10, max_size=10), st.none() | st.integers(0, 70000))
def test_any_ten_bytes_decode_or_raise_decode_error(data: bytes, frame_len: int | None) -> None:
    try:
        hdr = VirtioNetHdr.decode(data, frame_len)
    except DecodeError:
        return
    assert hdr.encode() == data
    assert hdr.problem(frame_len) is None


@pytest.mark.parametrize(
    ("hdr", "why"),
    [
        (VirtioNetHdr(flags=8), "unknown flags"),
        (VirtioNetHdr(flags=VnetFlag.RSC_INFO), "RSC_INFO"),
        (VirtioNetHdr(gso_type=2), "unknown GSO type"),
        (VirtioNetHdr(flags=1, gso_type=GsoType.UDP, gso_size=1000, csum_start=34, csum_offset=6), "UFO"),
        (VirtioNetHdr(gso_type=GSO_ECN), "ECN without GSO"),
        (VirtioNetHdr(flags=1, gso_type=1, csum_start=34, csum_offset=16), "gso_size 0"),
        (VirtioNetHdr(gso_type=1, gso_size=1448), "without NEEDS_CSUM"),
        (VirtioNetHdr(flags=1, csum_start=10, csum_offset=16), "inside the Ethernet header"),
        (VirtioNetHdr(flags=1, csum_start=34, csum_offset=16), "beyond a frame"),
        (VirtioNetHdr(flags=1, gso_type=1, gso_size=1448, csum_start=34, csum_offset=6), "TCP GSO with"),
        (VirtioNetHdr(flags=1, gso_type=5, gso_size=1000, csum_start=34, csum_offset=16), "UDP GSO with"),
        (VirtioNetHdr(), "frame of 13 bytes"),
    ],
)
def test_headers_that_cannot_describe_the_frame_are_refused(hdr: VirtioNetHdr, why: str) -> None:
    frame_len = 13 if why.startswith("frame") else 40
    with pytest.raises(DecodeError, match=why):
        VirtioNetHdr.decode(hdr.encode(), frame_len)


def test_short_input_and_bad_values() -> None:
    with pytest.raises(DecodeError):
        VirtioNetHdr.decode(b"\x00" * 9)
    with pytest.raises(ValueError, match="gso_size"):
        VirtioNetHdr(gso_size=70000).encode()
    with pytest.raises(ValueError, match="flags"):
        VirtioNetHdr(flags=256).encode()


@pytest.mark.parametrize("capture", CAPTURES)
def test_every_golden_header_decodes_against_its_frame(capture: str) -> None:
    seen = set()
    for vf in vframes(capture):
        hdr = VirtioNetHdr.decode(vf, len(vf) - VNET_HDR_LEN)
        assert hdr.encode() == vf[:VNET_HDR_LEN]
        seen.add(hdr.gso)
        if hdr.gso is not GsoType.NONE:
            # The kernel's hdr_len is the length of all headers; the checksum starts at the transport header.
            assert hdr.needs_csum and hdr.hdr_len > hdr.csum_start
    expected = {"tcp4": GsoType.TCPV4, "tcp6": GsoType.TCPV6, "udp4": GsoType.UDP_L4, "udp6": GsoType.UDP_L4}
    assert expected[capture] in seen


def test_fuzz_mutated_golden_headers() -> None:
    rng = Random(7)
    corpus = [vf for c in CAPTURES for vf in vframes(c)]
    decoded = refused = 0
    for _ in range(20_000):
        vf = bytearray(rng.choice(corpus)[: rng.randrange(0, 80)])
        for _ in range(rng.randrange(1, 4)):
            if vf:
                vf[rng.randrange(min(len(vf), 12))] = rng.randrange(256)
        try:
            VirtioNetHdr.decode(vf, rng.choice([None, len(vf) - 10, rng.randrange(0, 70000)]))
            decoded += 1
        except DecodeError:
            refused += 1
    assert decoded and refused
