"""Pure. The node's ARP responder: it answers for members of the virtual network that are elsewhere.

Theory of operation
-------------------
A machine on the TAP device (or on the LAN behind a router-mode node) sends an ARP request for another
virtual address. If that address is not on this side of the node and the node has a mapping for it in
the DHT, the node answers with its "remote" MAC (FE:FD + 4 bytes, one per node): every remote member
appears at that one MAC, and the node routes the frames sent to it by their IPv4 destination. Whether to
answer is asked of a callback, ``decide(ip)``, because only the node knows what is local and what is
mapped; it must answer at once (a lookup in the node's cache, not in the DHT).

Rules (the IPOP design, and RFC 5227):
- never answer a probe (sender 0.0.0.0): the prober would think its new address is taken, and a DHCP
  client would DECLINE the address it was just given;
- never answer a gratuitous ARP (an announcement), but report it as :class:`GratuitousArp`: a machine
  that appears behind this node with its address is what router migration looks for;
- never answer for an address the sender itself claims, nor for requests sent by our own MAC;
- report every sender's (IP, MAC) pair as :class:`NeighbourSeen`, so the node knows which MAC to
  deliver packets for a local address to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from .arp import UNSPECIFIED, ArpOp, ArpPacket
from .errors import DecodeError
from .ethernet import BROADCAST_MAC, MAC_LEN, ZERO_MAC, EtherType, SendFrame, build_frame, payload_offset

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GratuitousArp:
    """``ip`` announced itself at ``mac`` (RFC 5227 announcement, request or reply)."""

    ip: IPv4Address
    mac: bytes


@dataclass(frozen=True, slots=True)
class NeighbourSeen:
    """A machine on this side of the node uses ``ip`` at ``mac``."""

    ip: IPv4Address
    mac: bytes


@dataclass(frozen=True, slots=True)
class ProbeSeen:
    """Someone is about to take ``ip`` (an RFC 5227 probe from ``mac``); we stayed silent."""

    ip: IPv4Address
    mac: bytes


ArpAction = SendFrame | GratuitousArp | NeighbourSeen | ProbeSeen


class ArpResponder:
    def __init__(
        self,
        remote_mac: bytes,
        decide: Callable[[IPv4Address], bool],
        subnet: IPv4Network | None = None,
    ) -> None:
        """``remote_mac``: the MAC replies come from. ``decide(ip)``: True if the node answers for
        ``ip`` (not local, and mapped). ``subnet``: if given, requests for addresses outside it are
        never answered, whatever ``decide`` says (the node is not a proxy for the whole Internet)."""
        if len(remote_mac) != MAC_LEN or remote_mac[0] & 1:
            raise ValueError("remote_mac must be a 6-byte unicast MAC")
        self.remote_mac = remote_mac
        self.decide = decide
        self.subnet = subnet
        self.received = 0
        self.malformed = 0
        self.replies = 0

    def receive(self, frame: bytes) -> list[ArpAction]:
        """Handle one Ethernet frame carrying ARP. Never raises on its content."""
        self.received += 1
        try:
            ethertype, offset = payload_offset(frame)
            if ethertype != EtherType.ARP:
                raise DecodeError(f"EtherType 0x{ethertype:04x}")
            arp = ArpPacket.decode(frame[offset:])
        except DecodeError as exc:
            self.malformed += 1
            log.debug("dropping ARP frame: %s", exc)
            return []
        return self.receive_arp(arp, frame[6:12])

    def receive_arp(self, arp: ArpPacket, frame_src: bytes) -> list[ArpAction]:
        if self.remote_mac in (arp.sender_mac, frame_src):
            return []
        if arp.is_probe:
            log.debug("ARP probe for %s from %s: not answered", arp.target_ip, arp.sender_mac.hex())
            return [ProbeSeen(arp.target_ip, arp.sender_mac)]
        actions: list[ArpAction] = [NeighbourSeen(arp.sender_ip, arp.sender_mac)]
        if arp.is_gratuitous:
            log.info("gratuitous ARP: %s is at %s", arp.sender_ip, arp.sender_mac.hex())
            actions.append(GratuitousArp(arp.sender_ip, arp.sender_mac))
            return actions
        if arp.op != ArpOp.REQUEST or arp.sender_mac in (ZERO_MAC, BROADCAST_MAC):
            return actions
        target = arp.target_ip
        if self.subnet is not None and target not in self.subnet:
            return actions
        if not self.decide(target):
            return actions
        self.replies += 1
        log.debug("ARP: %s is-at our remote MAC, told %s", target, arp.sender_ip)
        reply = ArpPacket(ArpOp.REPLY, self.remote_mac, target, arp.sender_mac, arp.sender_ip)
        actions.append(SendFrame(build_frame(arp.sender_mac, self.remote_mac, EtherType.ARP, reply.encode())))
        return actions

    def request(self, target_ip: IPv4Address, sender_ip: IPv4Address = UNSPECIFIED) -> bytes:
        """An ARP request frame from the remote MAC, for the node to learn a local machine's MAC.
        ``sender_ip`` defaults to 0.0.0.0 so that asking pollutes no one's ARP cache."""
        arp = ArpPacket(ArpOp.REQUEST, self.remote_mac, sender_ip, ZERO_MAC, target_ip)
        return build_frame(BROADCAST_MAC, self.remote_mac, EtherType.ARP, arp.encode())
