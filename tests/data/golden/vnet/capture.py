"""Capture golden virtio frames from real TAP devices with offloads on, for vnproto's segmentation tests.

Two network namespaces, each with a TAP device opened with IFF_VNET_HDR and TUNSETOFFLOAD
(csum, TSO4/6, TSO-ECN, USO4/6: ``ipop.tap.TapDevice.open(..., offload=True)``), joined by a forwarder
in this process that passes every frame unchanged and records it. Through them: a TCP transfer of
200,000 bytes over IPv4 and one over IPv6 (python sockets; the payload is ``bytes(range(256))``
repeated), and one UDP_SEGMENT send of 3,500 bytes in 1,000-byte datagrams over IPv4 and over IPv6.
Each scenario is written to ``<name>.pcap`` beside this script: classic pcap, link type 147
(LINKTYPE_USER0), each record the 10-byte virtio-net header followed by the Ethernet frame, exactly as
read from the TAP.

Run as root from the repository root:  PYTHONPATH=. python tests/data/golden/vnet/capture.py [DIR]
"""

from __future__ import annotations

import struct
import sys
import tempfile
from pathlib import Path

from tests.netns import lab
from tests.vnproto.vnetlab import TapPair, expected, expected_udp, unchanged

LINKTYPE_USER0 = 147
TCP_BYTES = 200_000
UDP_SEG, UDP_BYTES = 1000, 3500


def write_pcap(path: Path, frames: list[bytes]) -> None:
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, LINKTYPE_USER0))
        for i, frame in enumerate(frames):
            f.write(struct.pack("<IIII", i, 0, len(frame), len(frame)))
            f.write(frame)


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent).resolve()
    with tempfile.TemporaryDirectory() as work, lab(Path(work)) as the_lab:
        pair = TapPair(the_lab, offload_a=True, offload_b=True)
        try:
            for name, v6 in (("tcp4", False), ("tcp6", True)):
                record: list[tuple[str, bytes]] = []
                got, _ = pair.transfer(unchanged, unchanged, TCP_BYTES, v6=v6, record=record)
                assert got == expected(TCP_BYTES), got
                write_pcap(out_dir / f"{name}.pcap", [f for _, f in record])
                print(f"{name}: {len(record)} frames")
            for name, v6 in (("udp4", False), ("udp6", True)):
                record = []
                got, _ = pair.udp_burst(unchanged, unchanged, UDP_SEG, UDP_BYTES, v6=v6, record=record)
                assert got == expected_udp(UDP_SEG, UDP_BYTES), got
                write_pcap(out_dir / f"{name}.pcap", [f for _, f in record])
                print(f"{name}: {len(record)} frames")
        finally:
            pair.close()


if __name__ == "__main__":
    main()
