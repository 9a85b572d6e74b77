"""I/O. Micro-benchmarks of the data plane's steps, one thread, ``timeit``: what one 64 KB TCP super-frame
costs to seal and open (with the overlay's own :class:`overlay.Session`), to cut into 1448-byte
segments (with complete or partial checksums), to merge back, and what a virtio header costs to parse.

Prints one JSON object: per step the median and minimum of 7 repeats in microseconds, and the implied
cost of moving one 64 KB super-frame each way (whole, or as 45 segments of a 1500-byte path). These
are the figures quoted in ``docs/dataplane.md``. Run: ``PYTHONPATH=. python -m bench.dataplane_micro``.
"""

from __future__ import annotations

import json
import statistics
import struct
import sys
import timeit
from collections.abc import Callable
from random import Random
from typing import Any

from overlay import SUITE_AES_256_GCM, SUITE_CHACHA20_POLY1305, Session, SessionState
from vnproto import VirtioNetHdr, coalesce, complete_checksum, segment, vnet_fields

REPEAT = 7
MSS = 1448
HEADERS = 10 + 14 + 20 + 32
"""virtio header, Ethernet, IPv4, TCP with timestamps: as the TAP hands them over (hdr_len 66 + 10)."""


def timed(fn: Callable[[], object], number: int) -> dict[str, float]:
    runs = [t / number * 1e6 for t in timeit.repeat(fn, number=number, repeat=REPEAT)]
    return {"median_us": round(statistics.median(runs), 3), "min_us": round(min(runs), 3)}


def super_frame(payload: int, rng: Random) -> bytes:
    """A TSO super-frame like those in tests/data/golden/vnet/tcp4.pcap: NEEDS_CSUM, GSO TCPV4."""
    data = rng.randbytes(payload)
    l4_len = 32 + payload
    eth = bytes.fromhex("020000009902020000009901") + b"\x08\x00"
    ip = bytearray(
        struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + l4_len, 1, 0x4000, 64, 6, 0, b"\n\x63\0\1", b"\n\x63\0\2")
    )
    total = sum(struct.unpack("!10H", ip))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    ip[10:12] = struct.pack("!H", ~total & 0xFFFF)
    options = b"\x01\x01\x08\x0a" + bytes(8)
    tcp = struct.pack("!HHIIBBHHH", 40000, 5999, 1, 1, 8 << 4, 0x18, 502, 0, 0) + options
    hdr = VirtioNetHdr(flags=1, gso_type=1, hdr_len=66, gso_size=MSS, csum_start=34, csum_offset=16)
    return hdr.encode() + eth + bytes(ip) + tcp + data


def sessions(suite: int) -> tuple[Session, Session]:
    k1, k2 = bytes(range(32)), bytes(range(32, 64))
    common: dict[str, Any] = {"peer_public_key": bytes(32), "suite": suite, "now": 0.0}
    a = Session(state=SessionState.UNCONFIRMED, index=1, peer_index=2, initiator=True,
                send_key=k1, recv_key=k2, **common)  # fmt: skip
    b = Session(state=SessionState.UNCONFIRMED, index=2, peer_index=1, initiator=True,
                send_key=k2, recv_key=k1, **common)  # fmt: skip
    return a, b


def aead_steps(out: dict[str, Any], suite: int, name: str, frame: bytes, segments: list[Any]) -> None:
    a, b = sessions(suite)
    out[f"seal_64k_{name}"] = timed(lambda: a.seal(frame, 0.0), 2000)
    sealed = [a.seal(frame, 0.0) for _ in range(2000 * REPEAT)]
    it = iter(sealed)
    out[f"open_64k_{name}"] = timed(
        lambda: (d := next(it), b.open(d, int.from_bytes(d[6:14], "big"), 0.0)), 2000
    )
    seg = bytes(segments[0])
    out[f"seal_segment_{name}"] = timed(lambda: a.seal(seg, 0.0), 20000)
    sealed = [a.seal(seg, 0.0) for _ in range(20000 * REPEAT)]
    it = iter(sealed)
    out[f"open_segment_{name}"] = timed(
        lambda: (d := next(it), b.open(d, int.from_bytes(d[6:14], "big"), 0.0)), 20000
    )


def main() -> int:
    rng = Random(1)
    frame = super_frame(45 * MSS, rng)  # 65,160 bytes of payload: what a TAP hands over at most
    out: dict[str, Any] = {"python": sys.version.split()[0], "frame_bytes": len(frame), "segments": 45}
    complete = segment(frame, 1514)
    partial = segment(frame, 1514, partial=True)
    aead_steps(out, SUITE_AES_256_GCM, "aesgcm", frame, complete)
    aead_steps(out, SUITE_CHACHA20_POLY1305, "chacha", frame, complete)
    out["segment_64k_complete"] = timed(lambda: segment(frame, 1514), 500)
    out["segment_64k_partial"] = timed(lambda: segment(frame, 1514, partial=True), 500)
    out["segment_64k_partial_9000"] = timed(lambda: segment(frame, 9014, partial=True), 2000)
    out["coalesce_45_segments"] = timed(lambda: coalesce(complete), 500)
    out["coalesce_45_partial_segments"] = timed(lambda: coalesce(partial), 500)
    one = bytes(partial[1])
    out["complete_checksum_segment"] = timed(lambda: complete_checksum(one), 20000)
    out["vnet_fields"] = timed(lambda: vnet_fields(frame), 200000)
    out["vnet_decode_checked"] = timed(lambda: VirtioNetHdr.decode(frame, len(frame) - 10), 100000)

    def med(key: str) -> float:
        return float(out[key]["median_us"])

    n = 45
    out["per_64k_us"] = {
        "whole_frame_seal_plus_open": round(med("seal_64k_aesgcm") + med("open_64k_aesgcm"), 1),
        "segmented_partial_sender": round(med("segment_64k_partial") + n * med("seal_segment_aesgcm"), 1),
        "segmented_receiver_coalesce": round(
            n * med("open_segment_aesgcm") + med("coalesce_45_partial_segments"), 1
        ),
        "segmented_complete_sender": round(med("segment_64k_complete") + n * med("seal_segment_aesgcm"), 1),
    }
    out["implied_gbps_one_core"] = {
        k: round(len(frame) * 8 / v / 1e3, 2) for k, v in out["per_64k_us"].items()
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
