"""Pure. What the node answers for its machine itself: DHCP, DNS and ping of the node's own address.

Theory of operation
-------------------
The machine behind the TAP device sees the node as a server at the subnet's first usable address
(``server_ip``). vnproto's responders do the protocols; this module connects them to the rest of the
node:

- DHCP (:class:`vnproto.DhcpServer`): ``AllocateAddress`` becomes a claim in the DHT
  (:class:`ipop.claims.Claims`), answered with ``address_allocated`` or ``allocation_failed``; a bound
  lease registers the node's name and the client's host name (:class:`ipop.names.Names`); releases,
  expiries and declines give the address up. While the overlay is not joined (a node that cannot reach
  any member, or holds the wrong secret) nothing is allocated: an address claimed alone would clash
  with the rest of the network the moment the node joins.
- DNS (:class:`vnproto.DnsResponder`): answers static names and PTR at once, member names from this
  node's own registrations, a cache, or a DHT get of ``dns:<ns>:<name>`` (queries for one name share
  one get), and hands the rest to the shell to forward upstream (:class:`ipop.vnevents.ForwardQuery`).
- ICMP echo to ``server_ip`` is answered, so ``ping 10.250.0.1`` tells the machine that its node lives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

from dht import OpResult, Values
from vnproto import (
    AddressDeclined,
    AllocateAddress,
    Answer,
    DecodeError,
    DhcpAction,
    DhcpServer,
    DhcpServerConfig,
    DnsResponder,
    EtherType,
    Forward,
    HostnameLearned,
    IcmpMessage,
    IcmpType,
    IpProto,
    IPv4Packet,
    LeaseBound,
    LeaseRecord,
    Lookup,
    ReleaseAddress,
    SendFrame,
    UdpFrame,
    build_frame,
    decode_udp_frame,
    udp_frame,
)

from .claims import Claims
from .names import NameCache, Names
from .vnevents import OP_GET, DhtOps, ForwardQuery, Outputs
from .vnwire import NameRecord, WireError, name_key

log = logging.getLogger(__name__)

MAX_PENDING_DNS = 256
"""Queries waiting for the DHT or an upstream server at once; more are dropped (the client retries).
Bounds what a machine flooding its resolver can make the node hold."""

MAX_NAME_CACHE = 4096
"""Member names remembered; a few hundred bytes each."""

DNS_PORT = 53


class LocalServices:
    def __init__(
        self,
        dhcp_config: DhcpServerConfig,
        *,
        namespace: str,
        node_name: str,
        outputs: Outputs,
        dht: DhtOps,
        claims: Claims,
        names: Names,
        forward_dns: bool,
        may_allocate: Callable[[], bool],
    ) -> None:
        self.config = dhcp_config
        self.server_ip = dhcp_config.server_ip
        self.remote_mac = dhcp_config.server_mac
        self.namespace = namespace
        self.node_name = node_name
        self.outputs = outputs
        self.dht = dht
        self.claims = claims
        self.names = names
        self.may_allocate = may_allocate
        self.dhcp = DhcpServer(dhcp_config)
        self.dns = DnsResponder(dhcp_config.domain, dhcp_config.subnet, forward=forward_dns)
        self.name_cache = NameCache(self.dns.member_ttl_s, self.dns.negative_ttl_s, MAX_NAME_CACHE)
        self.lookups: dict[str, list[tuple[Lookup, UdpFrame]]] = {}
        self.forwards: dict[int, UdpFrame] = {}
        self.counters = {"dns_dropped": 0, "dns_forward_failed": 0, "echo_replies": 0, "refused_unjoined": 0}
        self.deferred: dict[IPv4Address, LeaseBound] = {}
        self.leases_changed = False
        """Set when the lease table changed; the shell saves it and clears the flag."""

    # -- DHCP ---------------------------------------------------------------------------------------

    def dhcp_frame(self, frame: bytes, now: float) -> None:
        self.act(self.dhcp.receive(frame, now), now)

    def act(self, actions: list[DhcpAction], now: float) -> None:
        for action in actions:
            if isinstance(action, SendFrame):
                self.outputs.write_tap(action.frame)
            elif isinstance(action, AllocateAddress):
                self._allocate(action, now)
            elif isinstance(action, LeaseBound):
                self._bound(action, now)
            elif isinstance(action, ReleaseAddress):
                self.claims.release(action.ip, action.reason)
                self.names.unregister_ip(action.ip)
                self.leases_changed = True
            elif isinstance(action, AddressDeclined):
                self.claims.release(action.ip, "declined")
                self.claims.mark_taken(action.ip, now)
                self.names.unregister_ip(action.ip)
                self.leases_changed = True
            elif isinstance(action, HostnameLearned):
                pass  # registered with the LeaseBound that follows, when the address is known

    def _allocate(self, request: AllocateAddress, now: float) -> None:
        key = request.client_key
        if not self.may_allocate():
            self.counters["refused_unjoined"] += 1
            log.info("no address for %s: the overlay is not joined yet", key.hex())
            self.act(self.dhcp.allocation_failed(key, now), now)
            return

        def grant(ip: IPv4Address | None, at: float) -> None:
            if ip is None:
                self.act(self.dhcp.allocation_failed(key, at), at)
            else:
                self.act(self.dhcp.address_allocated(key, ip, at), at)

        self.claims.allocate(key, request.requested_ip, now, grant)

    def _bound(self, bound: LeaseBound, now: float) -> None:
        self.leases_changed = True
        if not self.may_allocate():
            # A lease restored (or renewed) before the overlay joined: claimed once it has, so that
            # the claim is made among the other nodes, not on this node alone.
            self.deferred[bound.ip] = bound
            return
        self.claims.claim(bound.ip, bound.client_key, "dhcp", now)
        self.machine_address(bound.ip, now)
        if bound.hostname and bound.hostname != self.node_name:
            self.names.register(bound.hostname, bound.ip, "dhcp", now)

    def machine_address(self, ip: IPv4Address, now: float) -> None:
        """The machine uses ``ip`` (a lease or a static address held): the node's name points at it."""
        self.names.register(self.node_name, ip, "node", now)

    def joined(self, now: float) -> None:
        """The overlay joined: claim what was bound meanwhile."""
        deferred, self.deferred = self.deferred, {}
        for bound in deferred.values():
            if any(lease.ip == bound.ip for lease in self.dhcp.leases()):
                self._bound(bound, now)

    def restore(self, records: list[LeaseRecord], now: float) -> None:
        """Leases from the state directory: claimed again, so the machine keeps its address."""
        self.act(self.dhcp.import_leases(records, now), now)

    # -- DNS ----------------------------------------------------------------------------------------

    def dns_frame(self, frame: bytes, now: float) -> None:
        try:
            via = decode_udp_frame(frame)
        except DecodeError as exc:
            self.counters["dns_dropped"] += 1
            log.debug("dropping DNS frame: %s", exc)
            return
        decision = self.dns.handle(via.payload)
        if isinstance(decision, Answer):
            self._reply(via, decision.reply)
        elif isinstance(decision, Lookup):
            self._lookup(decision, via, now)
        elif isinstance(decision, Forward):
            if len(self.forwards) >= MAX_PENDING_DNS:
                self.counters["dns_dropped"] += 1
                return
            token = self.dht.next_token()
            self.forwards[token] = via
            self.outputs.request(ForwardQuery(token, decision.query))

    def _lookup(self, lookup: Lookup, via: UdpFrame, now: float) -> None:
        name = lookup.name
        ip = self.names.local(name)
        known = ip is not None
        if not known:
            known, ip = self.name_cache.get(name, now)
        if known:
            self._reply(via, self.dns.complete(lookup, ip))
            return
        waiting = self.lookups.get(name)
        if waiting is not None:
            if len(waiting) < MAX_PENDING_DNS:
                waiting.append((lookup, via))
            return
        if len(self.lookups) >= MAX_PENDING_DNS:
            self.counters["dns_dropped"] += 1
            return
        self.lookups[name] = [(lookup, via)]
        self.dht.start(
            OP_GET, name_key(self.namespace, name), lambda result, at: self._looked_up(name, result, at)
        )

    def _looked_up(self, name: str, result: OpResult, now: float) -> None:
        waiting = self.lookups.pop(name, [])
        if not isinstance(result, Values):
            log.info("DNS lookup of %s failed: %s", name, result)
            self.counters["dns_dropped"] += len(waiting)
            return  # no answer: the client asks again, and so will we
        ip = self._name_value(result)
        self.name_cache.put(name, ip, now)
        for lookup, via in waiting:
            self._reply(via, self.dns.complete(lookup, ip))

    def _name_value(self, result: Values) -> IPv4Address | None:
        for info in result.values:
            try:
                ip = NameRecord.decode(info.value).ip
            except WireError:
                continue
            if ip in self.config.subnet:
                return ip
        return None

    def dns_forwarded(self, token: int, reply: bytes | None) -> None:
        via = self.forwards.pop(token, None)
        if via is None:
            raise KeyError(f"no forwarded DNS query with token {token}")
        if reply is None:
            self.counters["dns_forward_failed"] += 1
            return
        self._reply(via, reply)

    def _reply(self, via: UdpFrame, payload: bytes) -> None:
        frame = udp_frame(
            self.remote_mac,
            via.src_mac,
            self.server_ip,
            via.src_ip,
            src_port=DNS_PORT,
            dst_port=via.src_port,
            payload=payload,
        )
        self.outputs.write_tap(frame)

    # -- ICMP echo ----------------------------------------------------------------------------------

    def echo(self, frame: bytes, offset: int) -> None:
        try:
            packet = IPv4Packet.decode(frame[offset:])
            if packet.protocol != IpProto.ICMP or packet.is_fragment:
                return
            message = IcmpMessage.decode(packet.payload)
        except DecodeError:
            return
        if message.type != IcmpType.ECHO_REQUEST:
            return
        reply = IPv4Packet(self.server_ip, packet.src, IpProto.ICMP, message.echo_reply().encode()).encode()
        self.counters["echo_replies"] += 1
        self.outputs.write_tap(build_frame(frame[6:12], self.remote_mac, EtherType.IPV4, reply))

    # -- time and status ----------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        self.act(self.dhcp.expire(now), now)
        self.name_cache.expire(now)

    def next_deadline(self) -> float | None:
        return self.dhcp.next_deadline()

    def export_leases(self, now: float) -> list[LeaseRecord]:
        return self.dhcp.export_leases(now)

    def status(self, now: float) -> dict[str, Any]:
        leases = [
            {
                "ip": str(lease.ip),
                "mac": ":".join(f"{b:02x}" for b in lease.mac),
                "hostname": lease.hostname,
                "client": lease.client_key.hex(),
                "expires_in_s": round(lease.expires_at - now, 1),
            }
            for lease in sorted(self.dhcp.leases(), key=lambda lease: lease.ip)
        ]
        counters = self.dhcp.counters
        dns = self.dns.counters
        return {
            "leases": leases,
            "dhcp": {"offers": counters.offers, "acks": counters.acks, "naks": counters.naks},
            "dns": {
                "queries": dns.queries,
                "lookups": dns.lookups,
                "forwarded": dns.forwarded,
                "cache_hits": self.name_cache.hits,
                **{k: v for k, v in self.counters.items() if v},
            },
        }
