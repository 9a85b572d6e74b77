"""Frames and local protocols: Ethernet, ARP, IPv4, UDP, ICMP, TCP (MSS), DHCP and DNS as pure codecs
and responders; the virtio-net header of offloading TAP devices, with TCP/UDP segmentation and TCP
coalescing of its GSO frames. The lowest layer: it imports no other package of the project.

Decoders raise only :class:`DecodeError`. The responders (:class:`ArpResponder`, :class:`DhcpServer`,
:class:`DnsResponder`) are sans-IO: bytes and ``now`` in, actions out; whatever needs the DHT comes out
as a request the node answers later.
"""

from .arp import UNSPECIFIED, ArpOp, ArpPacket
from .arp_responder import ArpAction, ArpResponder, GratuitousArp, NeighbourSeen, ProbeSeen
from .checksum import checksum_update, internet_checksum, ones_complement_sum
from .coalesce import coalesce
from .dhcp import (
    BOOTREPLY,
    BOOTREQUEST,
    CLIENT_PORT,
    SERVER_PORT,
    DhcpMessage,
    MessageType,
    Opt,
    decode_domain_list,
    encode_domain_list,
)
from .dhcp_actions import (
    AddressDeclined,
    AllocateAddress,
    DhcpAction,
    HostnameLearned,
    Lease,
    LeaseBound,
    LeaseRecord,
    ReleaseAddress,
)
from .dhcp_config import DEFAULT_MTU, DhcpServerConfig
from .dhcp_replies import hostname_of
from .dhcp_server import DhcpServer
from .dhcp_state import TRANSITIONS, DhcpCounters, State, client_key
from .dns import Answer, DnsDecision, DnsResponder, Forward, Ignore, Lookup, static_name
from .errors import DecodeError
from .ethernet import (
    BROADCAST_MAC,
    REMOTE_MAC_PREFIX,
    ZERO_MAC,
    EthernetFrame,
    EtherType,
    SendFrame,
    build_frame,
    ipv4_dst,
    ipv4_dst_bytes,
    ipv4_src,
    mac_from_str,
    mac_to_str,
    payload_offset,
    random_remote_mac,
)
from .icmp import (
    IcmpMessage,
    IcmpType,
    UnreachableCode,
    fragmentation_needed_frame,
    needs_fragmentation,
)
from .ipv4 import IpProto, IPv4Packet, pseudo_header_sum
from .segment import complete_checksum, segment
from .tcp import clamp_mss, clamp_mss_frame, mss_for_mtu, tcp_mss
from .tcprun import TcpRun
from .udp import UdpDatagram, UdpFrame, decode_udp_frame, udp_frame, udp_ports
from .virtio import (
    GSO_ECN,
    NO_OFFLOAD,
    VNET_HDR_LEN,
    GsoType,
    VirtioNetHdr,
    VnetFlag,
    header_problem,
    vnet_fields,
)

__all__ = [
    "GSO_ECN",
    "NO_OFFLOAD",
    "VNET_HDR_LEN",
    "GsoType",
    "VirtioNetHdr",
    "VnetFlag",
    "TcpRun",
    "coalesce",
    "complete_checksum",
    "header_problem",
    "segment",
    "vnet_fields",
    "BOOTREPLY",
    "BOOTREQUEST",
    "BROADCAST_MAC",
    "CLIENT_PORT",
    "DEFAULT_MTU",
    "REMOTE_MAC_PREFIX",
    "SERVER_PORT",
    "TRANSITIONS",
    "UNSPECIFIED",
    "ZERO_MAC",
    "AddressDeclined",
    "AllocateAddress",
    "Answer",
    "ArpAction",
    "ArpOp",
    "ArpPacket",
    "ArpResponder",
    "DecodeError",
    "DhcpAction",
    "DhcpCounters",
    "DhcpMessage",
    "DhcpServer",
    "DhcpServerConfig",
    "DnsDecision",
    "DnsResponder",
    "EtherType",
    "EthernetFrame",
    "Forward",
    "GratuitousArp",
    "HostnameLearned",
    "IPv4Packet",
    "IcmpMessage",
    "IcmpType",
    "Ignore",
    "IpProto",
    "Lease",
    "LeaseBound",
    "LeaseRecord",
    "Lookup",
    "MessageType",
    "NeighbourSeen",
    "Opt",
    "ProbeSeen",
    "ReleaseAddress",
    "SendFrame",
    "State",
    "UdpDatagram",
    "UdpFrame",
    "UnreachableCode",
    "build_frame",
    "checksum_update",
    "clamp_mss",
    "clamp_mss_frame",
    "client_key",
    "decode_domain_list",
    "decode_udp_frame",
    "encode_domain_list",
    "fragmentation_needed_frame",
    "hostname_of",
    "internet_checksum",
    "ipv4_dst",
    "ipv4_dst_bytes",
    "ipv4_src",
    "mac_from_str",
    "mac_to_str",
    "mss_for_mtu",
    "needs_fragmentation",
    "ones_complement_sum",
    "payload_offset",
    "pseudo_header_sum",
    "random_remote_mac",
    "static_name",
    "tcp_mss",
    "udp_frame",
    "udp_ports",
]
