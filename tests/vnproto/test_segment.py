"""Segmentation and coalescing of virtio GSO frames, against frames captured from a real offloading
TAP and against frames built the kernel's way; every checksum is verified with the independent
implementation in tests/vnproto/checkframes.py. The kernel's own verdict is in test_segment_live.py."""

from __future__ import annotations

import contextlib
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.vnproto.checkframes import Parsed, build_gso, parse
from tests.vnproto.vnetgolden import CAPTURES, gso_vframes, vframes
from vnproto import NO_OFFLOAD, DecodeError, coalesce, complete_checksum, segment

TCP_FIN, TCP_SYN, TCP_PSH, TCP_ACK, TCP_CWR = 0x01, 0x02, 0x08, 0x10, 0x80
NO_HDR = (0, 0, 0, 0, 0, 0)


def check_pieces(original: bytes, pieces: list[bytes], partial: bool, max_frame: int) -> list[Parsed]:
    """The invariants of any segmentation: valid headers and checksums, payload in order and whole,
    sequence numbers and IP identifications advancing, flags where they belong."""
    orig = parse(original)
    gso_size = orig.vnet[3]
    parsed = [parse(p) for p in pieces]
    assert b"".join(p.payload for p in parsed) == orig.payload
    pos = 0
    for i, p in enumerate(parsed):
        last = i == len(parsed) - 1
        assert p.ip_ok()
        assert p.frame[: p.data][: p.l3 + 2] == orig.frame[: p.l3 + 2]
        if max_frame and (orig.proto == 6 or gso_size <= max_frame - orig.data):
            assert len(p.frame) <= max_frame
        if p.vnet == NO_HDR:
            assert not partial and p.l4_checksum_ok()
        else:
            assert partial and p.vnet[0] == 1 and p.vnet[4] == p.l4 and p.l4_partial_ok()
            if p.vnet[1]:
                assert p.vnet[1] == orig.vnet[1] and p.vnet[3] == gso_size
                assert len(p.payload) > gso_size or pieces == [original]  # passed on as it came
        if orig.v4:
            step = min(gso_size, len(parsed[0].payload))
            assert p.ip_id == (orig.ip_id + pos // step) & 0xFFFF
        if orig.proto == 6:
            assert p.seq == (orig.seq + pos) & 0xFFFFFFFF
            assert bool(p.tcp_flags & TCP_CWR) == (i == 0 and bool(orig.tcp_flags & TCP_CWR))
            assert p.tcp_flags & (TCP_FIN | TCP_PSH) == (orig.tcp_flags & (TCP_FIN | TCP_PSH) if last else 0)
            assert p.tcp_flags & ~(TCP_FIN | TCP_PSH | TCP_CWR) == orig.tcp_flags & ~(
                TCP_FIN | TCP_PSH | TCP_CWR
            )
        else:
            assert len(p.payload) % gso_size == 0 or last
        pos += len(p.payload)
    return parsed


MODES = [(False, 0), (False, 1514), (False, 1000), (True, 1514), (True, 9014), (True, 700)]


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize(("partial", "max_frame"), MODES)
def test_golden_gso_frames_segment_and_coalesce_back_byte_for_byte(
    capture: str, partial: bool, max_frame: int
) -> None:
    frames = gso_vframes(capture)
    assert frames
    for vf in frames:
        pieces = segment(vf, max_frame, partial=partial)
        parsed = check_pieces(vf, [bytes(p) for p in pieces], partial, max_frame)
        gso_size = parse(vf).vnet[3]
        if max_frame == 0:
            assert all(len(p.payload) <= gso_size for p in parsed)
        if capture.startswith("tcp"):
            # What the kernel handed over is exactly what merging the pieces gives back.
            assert [bytes(m) for m in coalesce(pieces)] == [vf] or max_frame - parsed[0].data < gso_size


def test_narrow_path_cuts_below_the_senders_mss_and_numbers_every_piece() -> None:
    vf = next(f for f in gso_vframes("tcp4") if len(f) > 20000)
    pieces = [bytes(p) for p in segment(vf, 600)]
    parsed = check_pieces(vf, pieces, False, 600)
    assert len(parsed) > len(parse(vf).payload) // 1448 * 2
    ids = [p.ip_id for p in parsed]
    assert ids == [(ids[0] + i) & 0xFFFF for i in range(len(ids))]


def test_udp_datagrams_are_never_cut_smaller_than_sent() -> None:
    for capture in ("udp4", "udp6"):
        (vf,) = gso_vframes(capture)
        pieces = [parse(p) for p in segment(vf, 500)]
        assert [len(p.payload) for p in pieces] == [1000, 1000, 1000, 500]
        assert all(p.l4_checksum_ok() for p in pieces)


@pytest.mark.parametrize("capture", CAPTURES)
def test_partial_checksums_of_golden_frames_complete_correctly(capture: str) -> None:
    checked = 0
    for vf in vframes(capture):
        if vf[0] == 1 and vf[1] == 0:  # NEEDS_CSUM, not GSO: handshake segments, ACKs, small datagrams
            parsed = parse(vf)
            assert parsed.l4_partial_ok()
            done = parse(complete_checksum(vf))
            assert done.vnet == NO_HDR and done.l4_checksum_ok()
            assert segment(vf)[0] == complete_checksum(vf)
            assert segment(vf, partial=True) == [vf]
            checked += 1
    assert checked or capture.startswith("udp")


def test_frames_without_work_pass_unchanged() -> None:
    plain = NO_OFFLOAD + bytes(60)
    assert segment(plain) == [plain]
    assert segment(plain, 1514) == [plain]
    vf = build_gso(bytes(3000), 1448)
    assert segment(vf, 9014, partial=True) == [vf]  # fits: the peer's TAP takes it whole
    assert coalesce([plain, plain]) == [plain, plain]


def test_misuse_and_malformed_frames() -> None:
    vf = build_gso(bytes(3000), 1448)
    with pytest.raises(ValueError, match="no room"):
        segment(vf, 40)
    with pytest.raises(DecodeError):
        segment(vf[:9])
    with pytest.raises(DecodeError, match="GSO type does not match"):
        segment(build_gso(bytes(3000), 1448, v6=True)[:11] + b"\x01" + vf[12:])  # TCPV6 header on IPv4
    bad = bytearray(vf)
    bad[10 + 12 : 10 + 14] = b"\x08\x06"  # ARP
    with pytest.raises(DecodeError, match="not IP"):
        segment(bytes(bad))
    with pytest.raises(DecodeError, match="GSO frame"):
        complete_checksum(vf)
    with pytest.raises(ValueError, match="max_ip"):
        coalesce([vf], max_ip=0)


payload_sizes = st.integers(1, 20000)


@settings(max_examples=150, deadline=None)
@given(
    size=payload_sizes,
    mss=st.integers(200, 9000),
    v6=st.booleans(),
    vlans=st.integers(0, 2),
    options=st.sampled_from([b"", b"\x01\x01\x08\x0a" + bytes(8), b"\x01" * 4, bytes(40)]),
    flags=st.sampled_from([TCP_ACK, TCP_ACK | TCP_PSH, TCP_ACK | TCP_FIN | TCP_PSH, TCP_ACK | TCP_CWR]),
    seq=st.integers(0, 2**32 - 1),
    ip_id=st.integers(0, 0xFFFF),
    mode=st.sampled_from(MODES),
)
def test_property_tcp_segmentation_and_coalescing(
    size: int,
    mss: int,
    v6: bool,
    vlans: int,
    options: bytes,
    flags: int,
    seq: int,
    ip_id: int,
    mode: tuple[bool, int],
) -> None:
    partial, max_frame = mode
    payload = Random(size).randbytes(size)
    vf = build_gso(payload, mss, v6=v6, vlans=vlans, options=options, flags=flags, seq=seq, ip_id=ip_id,
                   ecn=bool(flags & TCP_CWR))  # fmt: skip
    headers = len(vf) - 10 - size
    if max_frame and max_frame <= headers:
        with pytest.raises(ValueError):
            segment(vf, max_frame, partial=partial)
        return
    pieces = segment(vf, max_frame, partial=partial)
    check_pieces(vf, [bytes(p) for p in pieces], partial, max_frame)
    if max_frame == 0 or max_frame - headers >= mss:
        merged = coalesce(pieces)
        if len(pieces) > 1:
            assert [bytes(m) for m in merged] == [vf]


@settings(max_examples=60, deadline=None)
@given(size=payload_sizes, seg=st.integers(8, 4000), v6=st.booleans(), mode=st.sampled_from(MODES))
def test_property_udp_segmentation(size: int, seg: int, v6: bool, mode: tuple[bool, int]) -> None:
    partial, max_frame = mode
    vf = build_gso(Random(size).randbytes(size), seg, v6=v6, udp=True)
    pieces = segment(vf, max_frame, partial=partial)
    check_pieces(vf, [bytes(p) for p in pieces], partial, max_frame)
    assert coalesce(pieces) == pieces  # UDP is never merged


def segments_of(payload: bytes, mss: int = 1000, **kw: object) -> list[bytes]:
    return [bytes(p) for p in segment(build_gso(payload, mss, **kw), 0)]  # type: ignore[arg-type]


def test_coalesce_merges_only_what_gro_would() -> None:
    a = segments_of(bytes(5000), seq=1000)  # 5 full segments, PSH on the last
    other_flow = segments_of(bytes(3000), seq=1000, ip_id=1, options=b"\x01" * 4)
    # Interleaving another flow splits the runs but keeps every frame's order.
    out = coalesce([a[0], a[1], other_flow[0], a[2], a[3], a[4]])
    assert len(out) == 3 and parse(out[0]).payload == bytes(2000) and out[1] == other_flow[0]
    assert parse(out[2]).payload == bytes(3000) and parse(out[2]).seq == 3000
    # A gap in the sequence numbers is not bridged.
    assert len(coalesce([a[0], a[2]])) == 2
    # Nothing follows a segment with PSH; a short segment ends a run too.
    assert len(coalesce([a[4], a[0]])) == 2
    short = segments_of(bytes(1500), seq=1000)  # 1000 + 500
    more = segments_of(bytes(1000), seq=2500)
    assert len(coalesce([*short, *more])) == 2
    # SYN and segments without payload are never candidates.
    syn = segments_of(bytes(10), flags=TCP_SYN)
    assert coalesce(syn + syn) == syn + syn
    # CWR may open a run, never join one.
    cwr = segments_of(bytes(2000), seq=1000, flags=TCP_ACK | TCP_CWR, ecn=True)
    assert len(coalesce(cwr)) == 1 and parse(coalesce(cwr)[0]).vnet[1] == 0x81
    assert len(coalesce([a[0], *segments_of(bytes(1000), seq=2000, flags=TCP_ACK | TCP_CWR)])) == 2


def test_coalesce_respects_max_ip_and_takes_gso_pieces() -> None:
    segs = segments_of(bytes(10000), seq=5)
    out = coalesce(segs, max_ip=3100)
    assert [len(parse(m).payload) for m in out] == [3000, 3000, 3000, 1000]
    vf = build_gso(bytes(10000), 1000)
    pieces = segment(vf, 3014 + 54, partial=True)  # GSO pieces of 3 segments
    assert len(pieces) == 4 and [bytes(m) for m in coalesce(pieces)] == [vf]


def test_fuzz_segment_and_coalesce_raise_nothing_but_decode_error() -> None:
    rng = Random(11)
    corpus = [vf for c in CAPTURES for vf in vframes(c) if len(vf) < 9000] + [
        build_gso(bytes(3000), 500, vlans=1),
        build_gso(bytes(300), 100, v6=True, udp=True),
    ]
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(3000):
        vf = bytearray(rng.choice(corpus))
        if rng.random() < 0.1:
            vf = bytearray(rng.randbytes(rng.randrange(0, 200)))
        for _ in range(rng.randrange(1, 6)):
            if vf:
                vf[rng.randrange(min(len(vf), 120))] = rng.randrange(256)
        if rng.random() < 0.2:
            del vf[rng.randrange(len(vf) + 1) :]
        data = bytes(vf)
        try:
            segment(data, rng.choice([0, 1514, 9014]), partial=rng.random() < 0.5)
            outcomes["ok"] += 1
        except DecodeError:
            outcomes["refused"] += 1
        except ValueError as exc:
            assert "no room" in str(exc)
        with contextlib.suppress(DecodeError):
            complete_checksum(data)
        coalesce([data, data, rng.choice(corpus)])
    assert outcomes["ok"] and outcomes["refused"]


def test_coalesce_of_plain_ipv4_compares_every_header_byte_gro_compares() -> None:
    """The untagged-IPv4 case checks its continuations by a masked comparison: each header byte GRO
    requires equal splits the run when it differs, and only the per-segment fields may differ."""
    a, b = segments_of(bytes(2000), seq=1000, options=b"\x01\x01\x08\x0a" + bytes(8))[:2]
    first = parse(a)
    assert first.l3 == 14 and len(coalesce([a, b])) == 1
    may_differ = {10 + 14 + 4, 10 + 14 + 5, 10 + 14 + 10, 10 + 14 + 11}  # IP identification, checksum
    may_differ |= {10 + first.l4 + 16, 10 + first.l4 + 17}  # TCP checksum
    length = {10 + 14 + 2, 10 + 14 + 3}  # another length is another segment: judged by its size
    for at in range(10, 10 + first.data):
        if at in length:
            continue
        changed = bytearray(b)
        changed[at] ^= 0x40
        merged = coalesce([a, bytes(changed)])
        assert len(merged) == (1 if at in may_differ else 2), at
        assert coalesce([a, bytes(changed)])[-1] == bytes(changed) or at in may_differ
