"""Pure. The receive path of the virtual network: packets from the overlay to the machine.

A packet of service ``IPOP`` is written to the TAP device only when

1. its five-byte header carries our version and namespace tag (another namespace's packet is counted
   and dropped before anything else is read);
2. a unicast packet is addressed to an address this node holds — otherwise the sender's mapping is
   stale, and it hears so (:class:`ipop.vnwire.NoMapping`, on ``IPOP_CONTROL``) and looks again; a
   broadcast packet is addressed to a broadcast or multicast address;
3. its source address is held by the node that sent it. The overlay authenticated the sender; the
   mapping cache (the same that the send path uses) says who holds the source. An unknown source is
   looked up, the packet waiting; a source cached with another holder is looked up again at most every
   :data:`ipop.vnconfig.RELOOKUP_S` (the address may have moved) and is otherwise dropped as spoofed.

The frame written carries the node's remote MAC as source and the machine's MAC (unicast), the
broadcast MAC, or the multicast MAC of the group (RFC 1112 §6.4) as destination.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network

from overlay import Address, Delivered, Service, short

from .mapping import Entry, MappingCache
from .vnconfig import BROADCAST_MAC, IPV4, RELOOKUP_S, InPacket, Waiting
from .vnevents import Outputs
from .vnwire import HEADER_LEN, KIND_BROADCAST, KIND_UNICAST, Hello, NoMapping, WireError, decode_control

log = logging.getLogger(__name__)

MIN_PACKET = 20
"""An IPv4 header without options."""
IPOP = int(Service.IPOP)


class Receiver:
    def __init__(
        self,
        *,
        subnet: IPv4Network,
        tag: bytes,
        headers: tuple[bytes, bytes],
        host_mac: bytes,
        remote_mac: bytes,
        held: set[bytes],
        mapping: MappingCache[Waiting],
        outputs: Outputs,
        lookup: Callable[[bytes, float], None],
        greeted: Callable[[Address], None],
        counters: Counter[str],
    ) -> None:
        """``headers``: the unicast and broadcast packet headers of our namespace. ``held``: the raw
        addresses this node holds (shared with the claims, which keep it current). ``lookup(ip, now)``
        starts a DHT get whose answer the core gives to the mapping cache. ``greeted(node)``: a new member
        said hello."""
        self.subnet = subnet
        self.tag = tag
        self.unicast_header, self.broadcast_header = headers
        self.host_mac = host_mac
        self.remote_mac = remote_mac
        self.held = held
        self.mapping = mapping
        self.outputs = outputs
        self.lookup = lookup
        self.greeted = greeted
        self.counters = counters
        self.broadcasts = frozenset({b"\xff\xff\xff\xff", subnet.broadcast_address.packed})
        self._routes = mapping.routes
        self._write = outputs.write_tap
        self._unicast_prefix = host_mac + remote_mac + IPV4
        self.rx_packets = 0
        """Packets written to the machine: a plain integer, because it counts on the data plane."""

    def delivered(self, msg: Delivered, now: float) -> None:
        """A message of service IPOP or IPOP_CONTROL for this node."""
        payload = msg.payload
        head = payload[:HEADER_LEN]
        if head == self.unicast_header and msg.service == IPOP and len(payload) >= HEADER_LEN + MIN_PACKET:
            packet = payload[HEADER_LEN:]
            if (
                packet[0] & 0xF0 == 0x40
                and packet[16:20] in self.held
                and self._routes.get(packet[12:16]) == msg.src
            ):
                self.rx_packets += 1
                self._write(self._unicast_prefix + packet)
                return
        if msg.service == Service.IPOP_CONTROL:
            self._control(msg)
            return
        if len(payload) < HEADER_LEN + MIN_PACKET:
            self.counters["rx_malformed"] += 1
            return
        if head == self.unicast_header:
            kind = KIND_UNICAST
        elif head == self.broadcast_header:
            kind = KIND_BROADCAST
        else:
            self.counters["rx_other_namespace" if head[1:] != self.tag else "rx_malformed"] += 1
            return
        self.received(msg.src, kind, payload[HEADER_LEN:], now)

    def received(self, sender: Address, kind: int, packet: bytes, now: float) -> None:
        """A packet from ``sender``, checked and written to the machine (also after a lookup)."""
        if packet[0] >> 4 != 4:
            self.counters["rx_malformed"] += 1
            return
        src, dst = packet[12:16], packet[16:20]
        if kind == KIND_UNICAST and dst not in self.held:
            self.counters["rx_not_ours"] += 1
            self.outputs.send(sender, Service.IPOP_CONTROL, NoMapping(IPv4Address(dst)).encode(self.tag))
            return
        if kind == KIND_BROADCAST and not (dst[0] >= 224 or dst in self.broadcasts):
            self.counters["rx_malformed"] += 1
            return
        if self.mapping.routes.get(src) != sender and not self._source_held(sender, kind, packet, now):
            return
        if kind == KIND_UNICAST:
            dst_mac = self.host_mac
        elif 224 <= dst[0] < 240:
            dst_mac = b"\x01\x00\x5e" + bytes((dst[1] & 0x7F, dst[2], dst[3]))
        else:
            dst_mac = BROADCAST_MAC
        self.rx_packets += 1
        self._write(dst_mac + self.remote_mac + IPV4 + packet)

    def _source_held(self, sender: Address, kind: int, packet: bytes, now: float) -> bool:
        """Whether the packet's source is held by ``sender``, when the fast check did not say so.
        Looks it up if unknown or perhaps stale (the packet waits); True only when known to be."""
        src = packet[12:16]
        if IPv4Address(src) not in self.subnet:
            self.counters["rx_spoofed"] += 1
            return False
        entry = self.mapping.entries.get(src)
        if entry is not None and entry.state is Entry.FOUND and entry.holder == sender:
            return True  # off the fast path for a refresh, still valid
        if entry is not None and not entry.looking and now - entry.looked_up_at >= RELOOKUP_S:
            self.mapping.forget(src)  # the address may have moved: look again before calling it spoofed
        entry, look = self.mapping.want(src, now)
        if entry is None:
            self.counters["mapping_full_dropped"] += 1
            return False
        if look:
            self.lookup(src, now)
        if entry.state is Entry.LOOKING or entry.looking:
            if not self.mapping.wait(entry, InPacket(sender, kind, packet)):
                self.counters["queue_full_dropped"] += 1
            return False
        self.counters["rx_spoofed"] += 1
        log.debug("dropping a packet from %s claiming source %s", short(sender), IPv4Address(src))
        return False

    def _control(self, msg: Delivered) -> None:
        try:
            message = decode_control(msg.payload, self.tag)
        except WireError as exc:
            self.counters["rx_control_malformed"] += 1
            log.debug("dropping a control message from %s: %s", short(msg.src), exc)
            return
        if isinstance(message, Hello):
            self.greeted(msg.src)
            return
        raw = message.ip.packed
        entry = self.mapping.entries.get(raw)
        if entry is not None and entry.state is Entry.FOUND and entry.holder == msg.src:
            self.counters["no_mapping_heard"] += 1
            self.mapping.forget(raw)
