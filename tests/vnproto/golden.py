"""Access to the golden captures in tests/data/golden (see the README there)."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from tests.vnproto.pcap import read_pcap
from vnproto import DhcpMessage, DhcpServerConfig, UdpFrame, decode_udp_frame, mac_from_str

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden"
CAPTURES = ("dhclient", "udhcpc", "dhcpcd", "dig", "arping")
DHCP_CLIENTS = ("dhclient", "udhcpc", "dhcpcd")
HOSTNAMES = {"dhclient": "alpha", "udhcpc": "bravo", "dhcpcd": "charlie"}
"""The host names capture.sh gives each client."""
SERVER_MAC = mac_from_str("02:00:00:00:00:01")
CLIENT_MAC = mac_from_str("02:00:00:00:00:02")
SERVER_IP = IPv4Address("10.250.0.1")
SUBNET = IPv4Network("10.250.0.0/16")
# The configuration dnsmasq ran with in capture.sh, expressed as ours: the same server address and MAC,
# so the clients' captured requests (which name that server) are addressed to our server as well.
CAPTURE_CONFIG = DhcpServerConfig(
    server_ip=SERVER_IP, server_mac=SERVER_MAC, subnet=SUBNET, domain="ipop", mtu=1400, lease_time_s=3600
)


@dataclass(frozen=True)
class DhcpFrame:
    time: float
    frame: bytes
    udp: UdpFrame
    msg: DhcpMessage


def frames(capture: str) -> list[tuple[float, bytes]]:
    return [(r.time, r.frame) for r in read_pcap(GOLDEN / f"{capture}.pcap")]


def dhcp_frames(capture: str) -> list[DhcpFrame]:
    out = []
    for time, frame in frames(capture):
        try:
            udp = decode_udp_frame(frame)
        except ValueError:
            continue
        if {udp.src_port, udp.dst_port} == {67, 68}:
            out.append(DhcpFrame(time, frame, udp, DhcpMessage.decode(udp.payload)))
    return out
