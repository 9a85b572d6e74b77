"""Test support: several virtual network cores on a scripted DHT ring, and a DHCP client's frames.

Each :class:`Site` is one node: a real ``DhtNode`` of the ring (``tests/dht/ring.py``, virtual time,
seeded latency) and a real :class:`ipop.vnet_core.VnetCore`. The site is the core's ``Outputs`` seam: a
frame for the TAP device lands in ``site.tap``; an overlay send is delivered to the destination's core
after a millisecond of virtual time (or counted as undeliverable); a DHT request starts the operation
on the site's ``DhtNode``, and its ``OpCompleted`` goes back to the core. Upstream DNS queries are
answered by ``site.upstream`` (a function of the query bytes), as the shell's forwarder would.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network

from dht import DhtConfig, DhtEvent, OpCompleted, OpId
from ipop.vnconfig import VnetConfig
from ipop.vnet_core import VnetCore
from ipop.vnevents import DhtRequest, ForwardQuery, Request
from overlay import Address, Delivered, Undeliverable
from tests.dht.ring import Member, Ring
from vnproto import (
    BROADCAST_MAC,
    ArpOp,
    ArpPacket,
    DhcpMessage,
    EtherType,
    MessageType,
    Opt,
    build_frame,
    decode_udp_frame,
    udp_frame,
)

SUBNET = IPv4Network("10.250.0.0/16")
SERVER = IPv4Address("10.250.0.1")
ZERO, BCAST = IPv4Address(0), IPv4Address("255.255.255.255")
HOP_S = 0.001


class Site:
    def __init__(
        self, net: Net, member: Member, name: str, namespace: str, mac: bytes, routed_mtu: int = 0
    ) -> None:
        self.net = net
        self.member = member
        self.name = name
        self.mac = mac
        self.tap: list[bytes] = []
        self.sent: list[tuple[Address, int, bytes]] = []
        self.ops: dict[OpId, int] = {}
        self.upstream: Callable[[bytes], bytes | None] = lambda query: None
        self.forwarded: list[bytes] = []
        config = VnetConfig(
            namespace=namespace,
            subnet=SUBNET,
            domain="ipop",
            lease_seconds=120,
            mtu=1400,
            host_mac=mac,
            address=member.address,
            node_name=name,
            routed_mtu=routed_mtu,
        )
        self.core = VnetCore(config, self, {})

    @property
    def address(self) -> Address:
        return self.member.address

    # -- the Outputs seam ----------------------------------------------------------------------------

    def write_tap(self, frame: bytes) -> None:
        self.tap.append(frame)

    def send(self, dest: Address, service: int, payload: bytes) -> None:
        self.sent.append((dest, service, payload))
        self.net.deliver(self, dest, service, payload)

    def request(self, request: Request) -> None:
        if isinstance(request, ForwardQuery):
            self.forwarded.append(request.query)
            reply = self.upstream(request.query)
            self.net.ring.at(
                self.net.ring.now + HOP_S,
                lambda: self.core.dns_forwarded(request.token, reply, self.net.ring.now),
            )
            return
        self.net.ring.at(self.net.ring.now, lambda: self._start(request))

    def _start(self, request: DhtRequest) -> None:
        node, now = self.member.node, self.net.ring.now
        if request.op == "create":
            op_id = node.create(request.key, request.value, request.ttl, now, refresh=request.refresh)
        elif request.op == "put":
            op_id = node.put(request.key, request.value, request.ttl, now, refresh=request.refresh)
        elif request.op == "get":
            op_id = node.get(request.key, now)
        else:
            op_id = node.delete(request.key, request.value, now)
        self.ops[op_id] = request.token
        self.net.ring.poke(self.member)

    def event(self, event: DhtEvent) -> None:
        if isinstance(event, OpCompleted) and event.op_id in self.ops:
            token = self.ops.pop(event.op_id)
            self.core.dht_done(token, event.result, self.net.ring.now)
            self.net.tick(self)

    # -- the machine's side --------------------------------------------------------------------------

    def frame(self, frame: bytes) -> None:
        self.core.tap_frame(frame, self.net.ring.now)
        self.net.tick(self)

    def take(self) -> list[bytes]:
        frames, self.tap = self.tap, []
        return frames


class Net:
    """The ring, the sites, and virtual time."""

    def __init__(self, seed: int = 7, plain: int = 6) -> None:
        self.ring = Ring(DhtConfig(), seed=seed, latency=(0.002, 0.01))
        self.ring.add(plain)
        self.ring.run(1)
        self.sites: dict[Address, Site] = {}
        self.timers: dict[Address, float] = {}
        self.undeliverable = 0
        self.ring.on_event = self._event

    def site(self, name: str, namespace: str = "default", mac_byte: int = 0, routed_mtu: int = 0) -> Site:
        (member,) = self.ring.add(1)
        mac = bytes([0x02, 0, 0, 0, 0, mac_byte or len(self.sites) + 1])
        site = Site(self, member, name, namespace, mac, routed_mtu)
        self.sites[member.address] = site
        self.ring.run(0.5)
        site.core.set_joined(True, self.ring.now)
        self.tick(site)
        return site

    def _event(self, member: Member, event: DhtEvent) -> None:
        site = self.sites.get(member.address)
        if site is not None:
            site.event(event)

    def deliver(self, src: Site, dest: Address, service: int, payload: bytes) -> None:
        target = self.sites.get(dest)
        if target is None:
            self.undeliverable += 1
            self.ring.at(
                self.ring.now + HOP_S,
                lambda: src.core.undeliverable(Undeliverable(dest, service, "no_route"), self.ring.now),
            )
            return

        def arrive() -> None:
            target.core.delivered(Delivered(src.address, dest, service, payload, 1, True), self.ring.now)
            self.tick(target)

        self.ring.at(self.ring.now + HOP_S, arrive)

    def tick(self, site: Site) -> None:
        """Arm the core's timer, as the shell does after every call."""
        when = site.core.get_timer()
        if when is None or self.timers.get(site.address) == when:
            return
        self.timers[site.address] = when

        def fire() -> None:
            if self.timers.get(site.address) != when:
                return
            del self.timers[site.address]
            site.core.handle_timer(self.ring.now)
            self.tick(site)

        self.ring.at(when, fire)

    def run(self, seconds: float = 2.0) -> None:
        self.ring.run(seconds)


# -- what a machine sends --------------------------------------------------------------------------


def dhcp(
    kind: MessageType,
    mac: bytes,
    *,
    xid: int = 42,
    ciaddr: IPv4Address = ZERO,
    to: IPv4Address = BCAST,
    requested: IPv4Address | None = None,
    server: IPv4Address | None = None,
    host: str | None = None,
) -> bytes:
    options: list[tuple[int, bytes]] = [(Opt.MESSAGE_TYPE, bytes((kind,)))]
    if requested is not None:
        options.append((Opt.REQUESTED_IP, requested.packed))
    if server is not None:
        options.append((Opt.SERVER_ID, server.packed))
    if host is not None:
        options.append((Opt.HOSTNAME, host.encode()))
    msg = DhcpMessage(1, xid, mac + b"\x00" * 10, tuple(options), ciaddr=ciaddr)
    return udp_frame(mac, BROADCAST_MAC, ciaddr, to, src_port=68, dst_port=67, payload=msg.encode())


def dhcp_replies(frames: list[bytes]) -> list[DhcpMessage]:
    out = []
    for frame in frames:
        try:
            via = decode_udp_frame(frame)
        except Exception:
            continue
        if via.src_port == 67:
            out.append(DhcpMessage.decode(via.payload))
    return out


def lease(site: Site, host: str | None = None, requested: IPv4Address | None = None) -> IPv4Address:
    """Run DISCOVER/OFFER/REQUEST/ACK for the site's machine; the bound address."""
    site.frame(dhcp(MessageType.DISCOVER, site.mac, host=host, requested=requested))
    site.net.run(2)
    offers = [m for m in dhcp_replies(site.take()) if m.message_type == MessageType.OFFER]
    assert offers, "no DHCPOFFER"
    ip = offers[-1].yiaddr
    site.frame(dhcp(MessageType.REQUEST, site.mac, requested=ip, server=SERVER, host=host))
    site.net.run(1)
    acks = [m for m in dhcp_replies(site.take()) if m.message_type == MessageType.ACK]
    assert acks and acks[-1].yiaddr == ip, "no DHCPACK"
    return ip


def arp_request(mac: bytes, sender: IPv4Address, target: IPv4Address) -> bytes:
    arp = ArpPacket(ArpOp.REQUEST, mac, sender, b"\x00" * 6, target)
    return build_frame(BROADCAST_MAC, mac, EtherType.ARP, arp.encode())
