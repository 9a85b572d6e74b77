"""``vnproto.TcpRun``: plaintexts decrypted into its buffer (simulated here by writing them where the
slot says) become the same TAP frames ``vnproto.coalesce`` makes of the same virtio frames, byte for
byte: in-order segments of one flow merge, anything else ends the run and passes unchanged and in
order; the bytes a slot covered survive a slot that was not used."""

from __future__ import annotations

from random import Random

import pytest

from tests.vnproto.checkframes import build_gso, parse
from vnproto import TcpRun, coalesce, segment
from vnproto.segment import TCP_ACK, TCP_CWR, TCP_FIN, TCP_SYN
from vnproto.tcprun import CAPACITY

LEAD = b"\x01\x05" + b"HEAD!"
"""The caller's own header bytes before the virtio header (as ``ipop.fastpath``'s: kind, service and a
five-byte packet header)."""
IP_AT, VH_AT = len(LEAD) + 10, len(LEAD)
ETH = bytes(build_gso(bytes(100), 100)[10:24])


def plaintext(vframe: bytes | bytearray | memoryview, lead: bytes = LEAD) -> bytes:
    """What a peer seals for ``vframe``: the lead, the virtio header, the IPv4 packet (no Ethernet)."""
    vf = bytes(vframe)
    return lead + vf[:10] + vf[24:]


class Opener:
    """The data path's side: every plaintext goes where the slot says, as ``decrypt_into`` puts it."""

    def __init__(self, max_ip: int = 0xFFFF) -> None:
        self.out: list[bytes] = []
        self.run = TcpRun(lambda view: self.out.append(bytes(view)), ETH, max_ip)

    def feed(self, pt: bytes, peer: object = 1, uni: bool = False) -> None:
        run = self.run
        at = run.slot(len(pt))
        assert at >= 0
        run.view[at : at + len(pt)] = pt
        at = run.append(peer)
        if at >= 0:
            assert run.buf[at : at + len(pt)] == pt  # moved whole to the fresh slot
            if uni:
                run.start(len(LEAD), -1, peer)
            else:
                run.start(IP_AT, VH_AT, peer)

    def frames(self, vframes: list[bytes] | list[bytearray] | list[memoryview]) -> list[bytes]:
        for vf in vframes:
            self.feed(plaintext(vf))
        self.run.flush()
        return self.out


def segments_of(payload: bytes, mss: int = 1000, **kw: object) -> list[bytes]:
    return [bytes(p) for p in segment(build_gso(payload, mss, **kw), 0)]  # type: ignore[arg-type]


def same_as_coalesce(vframes: list[bytes], max_ip: int = 0xFFFF) -> list[bytes]:
    out = Opener(max_ip).frames(vframes)
    assert out == [bytes(f) for f in coalesce(vframes, max_ip)]
    return out


def test_a_super_frame_cut_for_a_1500_byte_path_becomes_one_frame_again() -> None:
    data = Random(1).randbytes(45 * 1448)
    vf = build_gso(data, 1448, options=b"\x01\x01\x08\x0a" + bytes(8))
    pieces = [bytes(p) for p in segment(vf, 1514, partial=True)]
    opener = Opener()
    (merged,) = opener.frames(pieces)
    assert merged == vf  # the original super-frame, byte for byte
    assert opener.run.writes == 1 and opener.run.merged == 44
    assert same_as_coalesce(pieces) == [merged]


def test_gso_pieces_and_complete_segments_merge_and_a_short_or_psh_one_ends_the_run() -> None:
    vf = build_gso(bytes(range(250)) * 40, 1000)
    same_as_coalesce([bytes(p) for p in segment(vf, 3014 + 54, partial=True)])  # GSO pieces of three
    short = segments_of(bytes(1500), seq=1000)  # 1000 + 500 (PSH)
    more = segments_of(bytes(3000), seq=2500)
    out = same_as_coalesce([*short, *more])
    assert [len(parse(f).payload) for f in out] == [1500, 3000]
    fin = segments_of(bytes(2000), seq=1000, flags=TCP_ACK | TCP_FIN)
    after = segments_of(bytes(1000), seq=3000)
    assert len(same_as_coalesce([*fin, *after])) == 2


def test_anything_that_does_not_continue_the_run_ends_it_and_passes_unchanged_in_order() -> None:
    a = segments_of(bytes(5000), seq=1000)  # 5 full segments, PSH on the last
    other_flow = segments_of(bytes(3000), seq=1000, ip_id=1, addresses=(bytes(4), bytes([1, 2, 3, 4])))
    udp = [bytes(p) for p in segment(build_gso(bytes(500), 500, udp=True), 0)]
    syn = segments_of(bytes(10), flags=TCP_SYN)
    cwr = segments_of(bytes(2000), seq=2000, flags=TCP_ACK | TCP_CWR, ecn=True)
    out = same_as_coalesce([a[0], a[1], other_flow[0], a[2], udp[0], a[3], a[4]])
    assert len(out) == 5 and out[1] == other_flow[0] and out[3] == udp[0]
    assert len(same_as_coalesce([a[0], a[2]])) == 2  # a gap in the sequence numbers
    assert len(same_as_coalesce([a[1], a[0]])) == 2  # out of order
    assert same_as_coalesce(syn + syn) == syn + syn
    assert len(same_as_coalesce([a[0], cwr[0]])) == 2  # CWR never joins a run
    assert parse(same_as_coalesce(cwr)[0]).vnet[1] == 0x81  # but may open one (GSO ECN)


def test_every_header_byte_gro_compares_splits_the_run() -> None:
    a, b = segments_of(bytes(2000), seq=1000, options=b"\x01\x01\x08\x0a" + bytes(8))[:2]
    first = parse(a)
    may_differ = {10 + 14 + 4, 10 + 14 + 5, 10 + 14 + 10, 10 + 14 + 11}  # IP identification, checksum
    may_differ |= {10 + first.l4 + 16, 10 + first.l4 + 17}  # TCP checksum
    length = {10 + 14 + 2, 10 + 14 + 3}
    for at in [*range(24, 10 + first.data)]:
        if at in length:
            continue
        changed = bytearray(b)
        changed[at] ^= 0x40
        out = same_as_coalesce([a, bytes(changed)])
        assert len(out) == (1 if at in may_differ else 2), at


def test_the_size_limit_and_random_mixes_match_coalesce() -> None:
    segs = segments_of(bytes(10000), seq=5)
    assert [len(parse(f).payload) for f in same_as_coalesce(segs, max_ip=3100)] == [3000, 3000, 3000, 1000]
    rng = Random(7)
    flows = [segments_of(rng.randbytes(rng.randrange(1, 9000)), rng.choice([536, 1000, 1448]), seq=s)
             for s in (1, 70000)]  # fmt: skip
    flows[1] = [bytes(f[:36]) + bytes([9]) + bytes(f[37:]) for f in flows[1]]  # another source address
    for _ in range(60):
        mix: list[bytes] = []
        cursors = [0, 0]
        while cursors != [len(f) for f in flows]:
            k = rng.randrange(2)
            if cursors[k] < len(flows[k]):
                mix.append(flows[k][cursors[k]])
                cursors[k] += 1
        if rng.random() < 0.3 and len(mix) > 2:
            i = rng.randrange(len(mix) - 1)
            mix[i], mix[i + 1] = mix[i + 1], mix[i]
        same_as_coalesce(mix, max_ip=rng.choice([0xFFFF, 4000]))


def test_a_slot_that_was_not_used_gives_back_what_it_covered() -> None:
    segs = segments_of(bytes(range(250)) * 16, seq=1000)  # 4 segments
    expected = Opener().frames(segs)
    opener = Opener()
    run = opener.run
    opener.feed(plaintext(segs[0]))
    for seg in segs[1:]:
        pt = plaintext(seg)
        at = run.slot(len(pt))
        run.view[at : at + len(pt)] = Random(at).randbytes(len(pt))  # a datagram that did not open
        run.release()
        opener.feed(pt)
    run.flush()
    assert opener.out == expected and len(expected) == 1


def test_another_peer_or_lead_does_not_continue_and_the_plain_layout_merges_too() -> None:
    a = segments_of(bytes(3000), seq=1000)
    opener = Opener()
    opener.feed(plaintext(a[0]), peer=1)
    opener.feed(plaintext(a[1]), peer=2)
    opener.feed(plaintext(a[2], lead=b"\x01\x05" + b"OTHER"), peer=2)
    opener.run.flush()
    assert opener.out == a
    complete = [bytes(p) for p in segment(build_gso(bytes(4000), 1000), 0)]  # all-zero virtio headers
    uni = Opener()
    for vf in complete:
        uni.feed(LEAD + vf[24:], uni=True)
    uni.run.flush()
    assert uni.out == [bytes(f) for f in coalesce(complete)] and len(uni.out) == 1


def test_misuse_raises_and_too_big_a_plaintext_has_no_slot() -> None:
    run = TcpRun(lambda view: None, ETH)
    assert run.slot(CAPACITY) == -1
    run.slot(100)
    with pytest.raises(RuntimeError):
        run.slot(100)
    run.release()
    with pytest.raises(RuntimeError):
        run.append(1)
    with pytest.raises(ValueError):
        TcpRun(lambda view: None, ETH[:10])
