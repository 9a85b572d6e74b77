"""I/O. Fuzz every vnproto decoder and responder with random and mutated frames; print JSON.

    python -m bench.fuzz_vnproto [--frames N] [--seed S] [--only NAME ...]

For each target, N inputs: a third random bytes of random length, the rest mutations (bit flips,
interesting bytes, insertions, deletions, truncations, splices) of a seed corpus of valid messages,
including the golden captures of real clients. Decoders may raise only ``DecodeError``; responders
and the never-raising helpers may raise nothing at all. Inputs for the DHCP and DNS responders are
mutated payloads re-wrapped in valid Ethernet/IPv4/UDP (checksums recomputed), so that the fuzzing
reaches the DHCP and DNS logic instead of stopping at a checksum. The output lists, per target, how
many inputs ran, how many decoded, and every unexpected exception type with a count and one example.
The CI test (tests/vnproto/test_fuzz.py) runs the same targets with 100,000 inputs each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from random import Random

from vnproto import (
    AllocateAddress,
    ArpPacket,
    ArpResponder,
    DecodeError,
    DhcpMessage,
    DhcpServer,
    DhcpServerConfig,
    DnsResponder,
    EthernetFrame,
    EtherType,
    IcmpMessage,
    IpProto,
    IPv4Packet,
    Lookup,
    UdpDatagram,
    build_frame,
    clamp_mss,
    clamp_mss_frame,
    decode_domain_list,
    decode_udp_frame,
    fragmentation_needed_frame,
    ipv4_dst,
    ipv4_src,
    needs_fragmentation,
    udp_frame,
    udp_ports,
)

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "data" / "golden"
SUBNET = IPv4Network("10.250.0.0/16")
SERVER_IP = IPv4Address("10.250.0.1")
SRC, DST = IPv4Address("10.250.0.9"), SERVER_IP
MAC_A, MAC_B = bytes.fromhex("020000000002"), bytes.fromhex("fefd01020304")
INTERESTING = (0x00, 0x01, 0x02, 0x04, 0x05, 0x0F, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xFE, 0xFF)
"""Bytes that sit on boundaries of length, flag and pointer fields."""
RESET_EVERY = 2000
"""Responders with state are rebuilt this often, so the fuzz measures robustness, not a table of
100,000 half-made clients."""


@dataclass
class Result:
    target: str
    frames: int = 0
    decoded: int = 0
    decode_errors: int = 0
    exceptions: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class Target:
    name: str
    corpus: str
    run: Callable[[bytes], object]
    decoder: bool
    """True: DecodeError is allowed. False: nothing may be raised."""


def pcap_frames(path: Path) -> list[bytes]:
    """The frames of a classic little- or big-endian pcap file (tests/data/golden)."""
    data = path.read_bytes()
    little = data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
    out: list[bytes] = []
    offset = 24
    while offset + 16 <= len(data):
        length = int.from_bytes(data[offset + 8 : offset + 12], "little" if little else "big")
        out.append(data[offset + 16 : offset + 16 + length])
        offset += 16 + length
    return out


def corpus() -> dict[str, list[bytes]]:
    """Valid inputs of each kind, to mutate."""
    frames = [f for p in sorted(GOLDEN.glob("*.pcap")) for f in pcap_frames(p)]
    dhcp = [
        DhcpMessage(1, 7, MAC_A + bytes(10), ((53, bytes((t,))), (50, DST.packed))).encode()
        for t in range(1, 9)
    ]
    dns: list[bytes] = []
    ips: list[bytes] = []
    for frame in frames:
        try:
            carried = decode_udp_frame(frame)
        except DecodeError:
            pass
        else:
            (dhcp if 67 in (carried.src_port, carried.dst_port) else dns).append(carried.payload)
        if frame[12:14] == b"\x08\x00":
            ips.append(frame[14:])
    syn = bytes.fromhex("9c40005000000001000000006002faf000000000020405b4")
    tcp = IPv4Packet(SRC, DST, IpProto.TCP, syn[:16] + b"\x00\x00" + syn[18:]).encode()
    icmp = [IcmpMessage.echo(1, 2, b"abc").encode(), IcmpMessage.unreachable(4, tcp, 1400).encode()]
    ips += [tcp, IPv4Packet(SRC, DST, IpProto.ICMP, icmp[0], options=b"\x01\x01\x01\x00").encode()]
    frames += [build_frame(MAC_B, MAC_A, EtherType.IPV4, p) for p in ips[-2:]]
    frames += [EthernetFrame(MAC_B, MAC_A, 0x0800, tcp, (b"\x81\x00\x00\x07",)).encode()]
    arp = [f[14:] for f in frames if f[12:14] == b"\x08\x06"]
    udp = [UdpDatagram(68, 67, m).encode(SRC, DST) for m in dhcp[:3]] + [
        UdpDatagram(5353, 53, q).encode(SRC, DST) for q in dns[:3]
    ]
    domains = [b"\x04ipop\x00", b"\x03eng\x05apple\x03com\x00\x09marketing\xc0\x04"]
    return {
        "frame": frames,
        "ip": ips,
        "udp": udp,
        "icmp": icmp,
        "arp": arp,
        "dhcp": dhcp,
        "dns": dns,
        "domains": domains,
    }


def mutate(rng: Random, seed: bytes, others: list[bytes]) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        op = rng.randrange(7)
        at = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[at % len(data)] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[at % len(data)] = rng.choice(INTERESTING)
        elif op == 2:
            data[at:at] = rng.randbytes(rng.choice((1, 2, 4, 16)))
        elif op == 3:
            del data[at : at + rng.choice((1, 2, 4, 64))]
        elif op == 4:
            del data[at:]
        elif op == 5 and data:
            start = rng.randrange(len(data))
            data[at:at] = data[start : start + rng.randrange(1, 32)]
        else:
            other = rng.choice(others)
            data[at:] = other[rng.randrange(len(other) + 1) :]
    return bytes(data)


def inputs(rng: Random, seeds: list[bytes], n: int) -> Iterator[bytes]:
    for i in range(n):
        if i % 3 == 0 or not seeds:
            yield rng.randbytes(rng.choice((rng.randrange(64), rng.randrange(600), rng.randrange(1600))))
        else:
            yield mutate(rng, rng.choice(seeds), seeds)


def targets(rng: Random) -> list[Target]:
    dhcp = _DhcpDriver(rng)
    dns = DnsResponder("ipop", SUBNET)
    arp = ArpResponder(MAC_B, lambda ip: int(ip) % 2 == 0, SUBNET)
    dhcp_serve = dhcp.serve

    def wrap_dhcp(payload: bytes) -> object:
        return dhcp_serve(udp_frame(MAC_A, MAC_B, SRC, DST, src_port=68, dst_port=67, payload=payload))

    def dns_serve(query: bytes) -> object:
        decision = dns.handle(query, tcp=rng.random() < 0.1)
        if isinstance(decision, Lookup):
            return dns.complete(decision, rng.choice((None, SRC)))
        return decision

    def icmp_error(frame: bytes) -> object:
        return (
            fragmentation_needed_frame(frame, 1400, SERVER_IP, MAC_B)
            if needs_fragmentation(frame, 60)
            else None
        )

    def fast(frame: bytes) -> object:
        return (ipv4_dst(frame), ipv4_src(frame), udp_ports(frame), needs_fragmentation(frame, 576))

    return [
        Target("ethernet", "frame", EthernetFrame.decode, True),
        Target("arp", "arp", ArpPacket.decode, True),
        Target("ipv4", "ip", IPv4Packet.decode, True),
        Target("udp", "udp", lambda b: UdpDatagram.decode(b, SRC, DST), True),
        Target("icmp", "icmp", IcmpMessage.decode, True),
        Target("dhcp", "dhcp", DhcpMessage.decode, True),
        # Mutations rarely keep a checksum right; these reach the fields behind it.
        Target("ipv4_unchecked", "ip", lambda b: IPv4Packet.decode(b, verify_checksum=False), True),
        Target("udp_unchecked", "udp", lambda b: UdpDatagram.decode(b, SRC, DST, False), True),
        Target("icmp_unchecked", "icmp", lambda b: IcmpMessage.decode(b, verify_checksum=False), True),
        Target("udp_frame", "frame", decode_udp_frame, True),
        Target("domain_list", "domains", decode_domain_list, True),
        Target("frag_needed", "frame", icmp_error, True),
        Target("fast_helpers", "frame", fast, False),
        Target("clamp_mss", "ip", lambda b: clamp_mss(b, 1360), False),
        Target("clamp_mss_frame", "frame", lambda b: clamp_mss_frame(b, 1360), False),
        Target("arp_responder", "frame", arp.receive, False),
        Target("dhcp_server", "dhcp", wrap_dhcp, False),
        Target("dhcp_server_frames", "frame", dhcp_serve, False),
        Target("dns_responder", "dns", dns_serve, False),
    ]


class _DhcpDriver:
    """Feeds frames to a DHCP server and plays a random allocator and clock around it."""

    def __init__(self, rng: Random) -> None:
        self.rng = rng
        self.config = DhcpServerConfig(server_ip=SERVER_IP, server_mac=MAC_B, subnet=SUBNET)
        self.server = DhcpServer(self.config)
        self.count = 0
        self.now = 0.0

    def serve(self, frame: bytes) -> object:
        self.count += 1
        if self.count % RESET_EVERY == 0:
            self.server = DhcpServer(self.config)
        server, rng = self.server, self.rng
        self.now += rng.choice((0.0, 0.5, 30.0, 700.0))
        actions = list(server.receive(frame, self.now))
        for action in actions:
            if isinstance(action, AllocateAddress):
                if rng.random() < 0.2:
                    actions += server.allocation_failed(action.client_key, self.now)
                else:
                    ip = IPv4Address(int(SUBNET.network_address) + rng.randrange(2, 40))
                    actions += server.address_allocated(action.client_key, ip, self.now)
        return actions + server.expire(self.now)


def fuzz(target: Target, seeds: list[bytes], n: int, rng: Random) -> Result:
    result = Result(target.name)
    start = time.perf_counter()
    for data in inputs(rng, seeds, n):
        result.frames += 1
        try:
            target.run(data)
            result.decoded += 1
        except DecodeError:
            if target.decoder:
                result.decode_errors += 1
            else:
                _record(result, DecodeError("raised by a function that must not raise"), data)
        except Exception as exc:  # the point of fuzzing: anything else is a finding
            _record(result, exc, data)
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def _record(result: Result, exc: Exception, data: bytes) -> None:
    name = type(exc).__name__
    result.exceptions[name] = result.exceptions.get(name, 0) + 1
    result.examples.setdefault(name, f"{exc!r} on {data.hex()}")


def run(n: int, seed: int, only: list[str] | None = None) -> list[Result]:
    rng = Random(seed)
    seeds = corpus()
    chosen = [t for t in targets(rng) if not only or t.name in only]
    return [fuzz(t, seeds[t.corpus], n, Random(f"{seed}:{t.name}")) for t in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="target names")
    args = parser.parse_args(argv)
    results = run(args.frames, args.seed, args.only)
    report = {
        "seed": args.seed,
        "frames_per_target": args.frames,
        "targets": [r.__dict__ for r in results],
        "unexpected_exceptions": sum(sum(r.exceptions.values()) for r in results),
    }
    print(json.dumps(report, indent=2))
    return 1 if report["unexpected_exceptions"] else 0


if __name__ == "__main__":
    sys.exit(main())
