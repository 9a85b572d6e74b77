"""Pure. The virtual network's core: frames from the TAP device and packets from the overlay in, frames,
packets and requests out. Sans-IO: every call takes ``now``; the shell (:mod:`ipop.vnet`) does the I/O.

Theory of operation
-------------------
A frame from the machine takes one of these paths:

- *fast path*: an untagged IPv4 frame from an address this node holds (``claims.held``) to a member
  whose holder is cached (``mapping.routes``): the SYN's MSS is clamped, a DF packet too large for the
  virtual MTU is answered with ICMP "fragmentation needed", and the IPv4 packet goes to the holder
  behind a five-byte header (:mod:`ipop.vnwire`). Two dictionary lookups per packet, nothing else.
- ARP: answered for members whose holder is known (from the node's "remote" MAC, as vnproto's
  responder does); for an unknown one a lookup starts and the answer is sent when it ends. A frame
  or ARP from an address the node does not hold makes it claim the address (a static configuration);
  while another node holds it, the machine's frames are dropped.
- DHCP, DNS and ping of the node's own address: :mod:`ipop.local`.
- broadcast and multicast IPv4: to every member of the namespace (``bcast:<ns>`` in the DHT).
- unicast to an unknown member: a DHT get, the frame waiting in a bounded queue (:mod:`ipop.mapping`).

A packet from the overlay is written to the TAP device only if its namespace tag is ours, it is
addressed to an address this node holds (else the sender hears "no such mapping" and looks again), and
its source address is held by the node that sent it — checked against the same mapping cache, with a
lookup if needed. The overlay's links authenticate the sender, so no member can forge another's packets.

States live in the parts: claims (:mod:`ipop.claims`), names (:mod:`ipop.names`), mappings
(:mod:`ipop.mapping`). This module routes between them and owns the timers.
"""

from __future__ import annotations

import logging
from collections import Counter
from ipaddress import IPv4Address
from typing import Any

from dht import OpResult, Values
from overlay import Address, Delivered, Service, Undeliverable, address_from_public_key, short
from vnproto import (
    ArpOp,
    ArpPacket,
    DecodeError,
    DhcpServerConfig,
    EtherType,
    LeaseRecord,
    build_frame,
    clamp_mss_frame,
    fragmentation_needed_frame,
    mss_for_mtu,
    needs_fragmentation,
    udp_ports,
)

from .claims import Claims, ClaimState
from .local import LocalServices
from .mapping import Entry, MappingCache
from .members import Members
from .names import Names
from .receive import Receiver
from .vnconfig import (
    ARP,
    IPV4,
    MAX_DEFERRED_ARP,
    MAX_MAPPINGS,
    MAX_WAITING,
    MIN_FRAME,
    NEGATIVE_TTL_S,
    POSITIVE_TTL_S,
    ArpWait,
    InPacket,
    OutFrame,
    VnetConfig,
    Waiting,
    remote_mac_of,
)
from .vnevents import OP_GET, DhtOps, Outputs
from .vnwire import (
    KIND_BROADCAST,
    KIND_UNICAST,
    AddressClaim,
    Hello,
    WireError,
    address_key,
    namespace_tag,
    packet_header,
)

log = logging.getLogger(__name__)

STATUS_ROWS = 100
"""Mapping cache rows shown by ``ipop status``; the cache of a busy node is much larger."""


class VnetCore:
    def __init__(self, config: VnetConfig, outputs: Outputs, history: dict[bytes, IPv4Address]) -> None:
        self.config = c = config
        self.outputs = outputs
        self.tag = namespace_tag(c.namespace)
        self.remote_mac = remote_mac_of(c.address)
        self.server_ip = c.server_ip
        self.counters: Counter[str] = Counter()
        self.dht = DhtOps(outputs)
        ttl = max(60, min(c.lease_seconds, 86_400))
        self.claims = Claims(c.namespace, c.subnet, frozenset({self.server_ip}), ttl, self.dht, history)
        self.names = Names(c.namespace, ttl, self.dht)
        hello = Hello().encode(self.tag)
        self.members = Members(
            c.namespace, c.address, self.dht, lambda member: outputs.send(member, Service.IPOP_CONTROL, hello)
        )
        self.mapping: MappingCache[Waiting] = MappingCache(
            POSITIVE_TTL_S, NEGATIVE_TTL_S, MAX_WAITING, MAX_MAPPINGS
        )
        dhcp = DhcpServerConfig(
            server_ip=self.server_ip,
            server_mac=self.remote_mac,
            subnet=c.subnet,
            domain=c.domain,
            mtu=c.mtu,
            lease_time_s=c.lease_seconds,
        )
        self.local = LocalServices(
            dhcp,
            namespace=c.namespace,
            node_name=c.node_name,
            outputs=outputs,
            dht=self.dht,
            claims=self.claims,
            names=self.names,
            forward_dns=c.forward_dns,
            may_allocate=lambda: self.joined,
        )
        self.joined = c.standalone
        self._opened = False
        """Whether membership was announced and deferred leases claimed (once, at the first join)."""
        self._uni = packet_header(KIND_UNICAST, self.tag)
        self._bcast = packet_header(KIND_BROADCAST, self.tag)
        self._mss = mss_for_mtu(c.mtu)
        self._max_frame = c.carried_mtu + 14
        """The longest untagged frame whose IPv4 packet fits the virtual MTU."""
        self._routes = self.mapping.routes
        self._held = self.claims.held
        self._send = outputs.send
        self.tx_packets = 0
        """Packets sent to members: a plain integer, because it counts on the data plane."""
        self._server = self.server_ip.packed
        self._broadcasts = frozenset({b"\xff\xff\xff\xff", c.subnet.broadcast_address.packed})
        self._deferred_arp = 0
        self.receiver = Receiver(
            subnet=c.subnet,
            tag=self.tag,
            headers=(self._uni, self._bcast),
            host_mac=c.host_mac,
            remote_mac=self.remote_mac,
            held=self.claims.held,
            mapping=self.mapping,
            outputs=outputs,
            lookup=self._lookup,
            greeted=self.members.greeted_by,
            counters=self.counters,
        )

    # -- start and joins ----------------------------------------------------------------------------

    def set_joined(self, joined: bool, now: float) -> None:
        """The overlay's join state changed. Membership and names are written once joined."""
        joined = joined or self.config.standalone
        if joined != self.joined:
            self.joined = joined
            log.info("overlay %s", "joined: the virtual network is open" if joined else "no longer joined")
        if joined and not self._opened:
            self._opened = True
            self.members.announce(now)
            self.local.joined(now)

    def restore(self, leases: list[LeaseRecord], now: float) -> None:
        self.local.restore(leases, now)

    # -- frames from the machine --------------------------------------------------------------------

    def tap_frames(self, frames: list[bytes], now: float) -> None:
        for frame in frames:
            self.tap_frame(frame, now)

    def tap_frame(self, frame: bytes, now: float) -> None:
        if frame[12:14] == IPV4 and len(frame) >= MIN_FRAME:
            holder = self._routes.get(frame[30:34])
            if holder is not None and frame[26:30] in self._held and len(frame) <= self._max_frame:
                if frame[23] == 6:  # TCP: only SYNs change, and clamp_mss_frame leaves the rest at once
                    frame = clamp_mss_frame(frame, self._mss)
                self.tx_packets += 1
                self._send(holder, Service.IPOP, self._uni + frame[14:])
                return
            self._ipv4(frame, now)
        elif frame[12:14] == ARP:
            self._arp(frame, now)
        else:
            self.counters["tap_other"] += 1

    def _send_unicast(self, holder: Address, frame: bytes) -> None:
        if len(frame) > self._max_frame:
            self._too_big(frame)
            return
        if frame[23] == 6:
            frame = clamp_mss_frame(frame, self._mss)
        self.tx_packets += 1
        self._send(holder, Service.IPOP, self._uni + frame[14:])

    def _too_big(self, frame: bytes) -> None:
        carried = self.config.carried_mtu
        if needs_fragmentation(frame, carried):
            try:
                reply = fragmentation_needed_frame(frame, carried, self.server_ip, self.remote_mac)
            except DecodeError:
                reply = b""
            if reply:
                self.outputs.write_tap(reply)
            self.counters["frag_needed_sent"] += 1
        else:
            self.counters["too_big_dropped"] += 1

    def _ipv4(self, frame: bytes, now: float) -> None:
        if frame[14] >> 4 != 4:
            self.counters["tap_malformed"] += 1
            return
        dst = frame[30:34]
        ports = udp_ports(frame)
        if ports is not None and ports[1] == 67:
            self.local.dhcp_frame(frame, now)
            return
        if dst == self._server:
            if ports is not None and ports[1] == 53:
                self.local.dns_frame(frame, now)
            elif frame[23] == 1:
                self.local.echo(frame, 14)
            else:
                self.counters["to_server_dropped"] += 1
            return
        if not self._source_ok(frame[26:30], now):
            return
        if dst[0] >= 224 or dst in self._broadcasts:
            self._broadcast(frame, dst, now)
            return
        dst_ip = IPv4Address(dst)
        if dst_ip not in self.config.subnet:
            self.counters["outside_subnet_dropped"] += 1
            return
        entry, look = self.mapping.want(dst, now)
        if entry is None:
            self.counters["mapping_full_dropped"] += 1
            return
        if look:
            self._lookup(dst, now)
        if entry.state is Entry.FOUND and entry.holder is not None:
            self._send_unicast(entry.holder, frame)
        elif entry.state is Entry.ABSENT:
            self.counters["no_mapping_dropped"] += 1
        elif not self.mapping.wait(entry, OutFrame(frame)):
            self.counters["queue_full_dropped"] += 1

    def _source_ok(self, src: bytes, now: float) -> bool:
        """Whether the machine may send from ``src``; claims it (static address) if it is new."""
        if src in self.claims.held:
            return True
        ip = IPv4Address(src)
        if not self.claims.assignable(ip):
            self.counters["bad_source_dropped"] += 1
            return False
        state = self.claims.state_of(ip)
        if state is None and self.joined:
            self.claims.claim(ip, b"", "static", now, lambda ok, at: self._static_held(ip, ok, at))
            state = self.claims.state_of(ip)
        if state is ClaimState.HELD:
            return True
        self.counters["conflict_dropped" if state is ClaimState.CONFLICT else "unclaimed_dropped"] += 1
        return False

    def _static_held(self, ip: IPv4Address, ok: bool, now: float) -> None:
        if ok:
            self.local.machine_address(ip, now)

    def _broadcast(self, frame: bytes, dst: bytes, now: float) -> None:
        if len(frame) - 14 > self.config.carried_mtu:
            self.counters["too_big_dropped"] += 1
            return
        payload = self._bcast + frame[14:]
        sent = 0
        for member in self.members.others(now):
            self.outputs.send(member, Service.IPOP, payload)
            sent += 1
        self.counters["broadcasts_sent"] += 1
        self.counters["broadcast_copies"] += sent

    # -- ARP ----------------------------------------------------------------------------------------

    def _arp(self, frame: bytes, now: float) -> None:
        try:
            arp = ArpPacket.decode(frame[14:])
        except DecodeError:
            self.counters["tap_malformed"] += 1
            return
        if arp.op != ArpOp.REQUEST or arp.is_probe or arp.sender_mac[0] & 1:
            return  # replies, probes and announcements need no answer from us
        sender, target = arp.sender_ip.packed, arp.target_ip
        if arp.is_gratuitous or not self._source_ok(sender, now):
            return
        if target == self.server_ip:
            self._arp_reply(arp)
            return
        raw = target.packed
        if target not in self.config.subnet or raw in self.claims.held:
            return
        entry, look = self.mapping.want(raw, now)
        if entry is None:
            return
        if look:
            self._lookup(raw, now)
        if entry.state is Entry.FOUND:
            self._arp_reply(arp)
        elif (
            entry.state is Entry.LOOKING
            and self._deferred_arp < MAX_DEFERRED_ARP
            and self.mapping.wait(entry, ArpWait(arp))
        ):
            self._deferred_arp += 1

    def _arp_reply(self, request: ArpPacket) -> None:
        mac = self.remote_mac
        reply = ArpPacket(ArpOp.REPLY, mac, request.target_ip, request.sender_mac, request.sender_ip)
        self.counters["arp_replies"] += 1
        self.outputs.write_tap(build_frame(request.sender_mac, mac, EtherType.ARP, reply.encode()))

    # -- lookups ------------------------------------------------------------------------------------

    def _lookup(self, ip: bytes, now: float) -> None:
        key = address_key(self.config.namespace, IPv4Address(ip))
        self.dht.start(OP_GET, key, lambda result, at: self._looked_up(ip, result, at))

    def _looked_up(self, ip: bytes, result: OpResult, now: float) -> None:
        if not isinstance(result, Values):
            waiting = self.mapping.failed(ip)
            self.counters["lookup_failed"] += 1
            self.counters["lookup_failed_dropped"] += len(waiting)
            self._deferred_arp -= sum(isinstance(w, ArpWait) for w in waiting)
            return
        holder = None
        for info in result.values:
            try:
                AddressClaim.decode(info.value)
                holder = address_from_public_key(info.owner)
            except (WireError, ValueError):
                continue
            break
        for item in self.mapping.resolved(ip, holder, now):
            if isinstance(item, OutFrame):
                if holder is not None:
                    self._send_unicast(holder, item.frame)
                else:
                    self.counters["no_mapping_dropped"] += 1
            elif isinstance(item, InPacket):
                self.receiver.received(item.sender, item.kind, item.packet, now)
            else:
                self._deferred_arp -= 1
                if holder is not None:
                    self._arp_reply(item.request)

    # -- the overlay ------------------------------------------------------------------------------

    def delivered(self, msg: Delivered, now: float) -> None:
        """A message of service IPOP or IPOP_CONTROL for this node."""
        self.receiver.delivered(msg, now)

    def undeliverable(self, event: Undeliverable, now: float) -> None:
        """A packet to ``event.dest`` found no route: whatever it held is looked up afresh."""
        if event.service in (Service.IPOP, Service.IPOP_CONTROL):
            gone = self.mapping.forget_holder(event.dest)
            self.members.unreachable(event.dest)
            if gone:
                self.counters["undeliverable"] += 1

    # -- the shell's answers ------------------------------------------------------------------------

    def dht_done(self, token: int, result: OpResult, now: float) -> None:
        self.dht.done(token, result, now)

    def dns_forwarded(self, token: int, reply: bytes | None, now: float) -> None:
        self.local.dns_forwarded(token, reply)

    # -- time ---------------------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        self.local.tick(now)
        self.mapping.expire(now)
        self.claims.tick(now)
        self.names.tick(now)
        self.members.tick(now, self.joined)

    def get_timer(self) -> float | None:
        times = [
            t
            for t in (
                self.local.next_deadline(),
                self.mapping.next_expiry(),
                self.claims.next_deadline(),
                self.names.next_deadline(),
                self.members.next_deadline(self.joined),
            )
            if t is not None
        ]
        return min(times, default=None)

    # -- status -------------------------------------------------------------------------------------

    def status(self, now: float) -> dict[str, Any]:
        local = self.local.status(now)
        counters = {**self.counters, "tx_packets": self.tx_packets, "rx_packets": self.receiver.rx_packets}
        mappings = [
            {
                "ip": str(IPv4Address(ip)),
                "state": e.state.value,
                "holder": short(e.holder) if e.holder is not None else None,
                "expires_in_s": round(e.expires_at - now, 1) if e.state is not Entry.LOOKING else None,
            }
            for ip, e in sorted(self.mapping.entries.items())[:STATUS_ROWS]
        ]
        return {
            "namespace": self.config.namespace,
            "subnet": str(self.config.subnet),
            "server_ip": str(self.server_ip),
            "mtu": self.config.mtu,
            "joined": self.joined,
            "addresses": self.claims.status(),
            "leases": local["leases"],
            "names": self.names.status(),
            "members": self.members.status(now),
            "mappings": mappings,
            "dhcp": local["dhcp"],
            "dns": local["dns"],
            "counters": dict(sorted(counters.items())),
        }
