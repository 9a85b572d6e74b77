"""Pure. A DHCP server (RFC 2131) for the virtual network, sans-IO, with an asynchronous allocator.

Theory of operation
-------------------
Frames come in through :meth:`DhcpServer.receive`; actions come out (frames to send, and requests to
the node). Addresses are not the server's to give: the node claims them in the DHT, which takes
round trips, so a DISCOVER that needs a new address becomes :class:`AllocateAddress`, and the
conversation continues when the node calls :meth:`address_allocated` or :meth:`allocation_failed`.
Nothing blocks; a client that retransmits meanwhile only refreshes the pending request.

Each client (keyed by option 61, else ``0x01 + chaddr``, which is what a client identifier derived from
an Ethernet MAC looks like, so both spellings of one machine meet) is in one of these states:

    ALLOCATING_OFFER   a DISCOVER waits for the allocator
    ALLOCATING_ACK     a REQUEST for an address we have no record of waits for the allocator
                       (INIT-REBOOT after a restart of the node, or a client that moved here)
    OFFERED            an offer is held for ``offer_hold_s``
    BOUND              a lease runs until ``expires_at``

A client with none of these has no entry. A lease may exist in OFFERED (a bound client that rebooted
and sent DISCOVER is offered its own address again). The legal transitions are listed once, in
``dhcp_state.TRANSITIONS``; :meth:`_move` refuses any other, so an impossible path is a loud bug,
not silent drift.

A REQUEST is classified by RFC 2131 §4.3.2: with a server identifier it is SELECTING; with a requested
address and no ``ciaddr``, INIT-REBOOT; with ``ciaddr``, RENEWING (unicast to us) or REBINDING
(broadcast). In every state an address we hold for that client is acknowledged at once; an address we
have no record of is put to the allocator and acknowledged only if the allocator grants exactly it
(so a host that moved between routers keeps its address); anything else is NAKed. This goes beyond
the RFC's "remain silent without a record", deliberately: the DHT, not this table, is the record.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address

from .dhcp import BOOTREQUEST, HTYPE_ETHERNET, SERVER_PORT, DhcpMessage, MessageType
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
from .dhcp_config import DhcpServerConfig
from .dhcp_replies import ReplyBuilder, hostname_of, requested_hostname
from .dhcp_state import NONE, TRANSITIONS, ClientRecord, DhcpCounters, State, client_key
from .errors import DecodeError
from .udp import UdpFrame, decode_udp_frame

log = logging.getLogger(__name__)


class DhcpServer:
    """The sans-IO DHCP server of one node. See the module docstring for the state machine."""

    def __init__(self, config: DhcpServerConfig) -> None:
        self.config = config
        self.counters = DhcpCounters()
        self._replies = ReplyBuilder(config)
        self._clients: dict[bytes, ClientRecord] = {}
        self._our_destinations = frozenset(
            {config.server_ip, IPv4Address("255.255.255.255"), config.subnet.broadcast_address}
        )

    # -- inputs -----------------------------------------------------------------------------------

    def receive(self, frame: bytes, now: float) -> list[DhcpAction]:
        """Handle one Ethernet frame. Anything that is not a well-formed DHCP request to port 67 is
        counted and dropped; this never raises on frame content."""
        self.counters.received += 1
        try:
            via = decode_udp_frame(frame)
            if via.dst_port != SERVER_PORT:
                raise DecodeError(f"UDP port {via.dst_port}")
            msg = DhcpMessage.decode(via.payload)
        except DecodeError as exc:
            self.counters.malformed += 1
            log.debug("dropping frame: %s", exc)
            return []
        return self.receive_message(msg, via, now)

    def receive_message(self, msg: DhcpMessage, via: UdpFrame, now: float) -> list[DhcpAction]:
        """Handle a decoded DHCP message that arrived in ``via``."""
        if msg.op != BOOTREQUEST or msg.htype != HTYPE_ETHERNET or msg.hlen != 6:
            return self._ignore("not an Ethernet BOOTREQUEST")
        if int(msg.giaddr):
            return self._ignore("relayed message: a TAP device has no relay agents")
        if via.dst_ip not in self._our_destinations:
            # Unicast to another server (on a LAN bridged in router mode): not ours to answer.
            return self._ignore(f"addressed to {via.dst_ip}")
        key = client_key(msg)
        kind = msg.message_type
        log.debug("%s from %s xid=%08x", kind, key.hex(), msg.xid)
        known = self._clients.get(key)
        # Lapse whatever of this client's has run out first, so the handlers see only live state.
        actions = self._expire_client(known, now) if known is not None else []
        if kind == MessageType.DISCOVER:
            return actions + self._discover(key, msg, via, now)
        if kind == MessageType.REQUEST:
            return actions + self._request(key, msg, via, now)
        if kind == MessageType.RELEASE:
            return actions + self._release(key, msg)
        if kind == MessageType.DECLINE:
            return actions + self._decline(key, msg)
        if kind == MessageType.INFORM:
            return [*actions, self._replies.inform_ack(msg, via)]
        return actions + self._ignore(f"message type {kind}")

    def address_allocated(self, client_key: bytes, ip: IPv4Address, now: float) -> list[DhcpAction]:
        """The allocator granted ``ip`` to ``client_key``. Continues the conversation that asked for it;
        if none waits any more, the address is handed back (``ReleaseAddress(reason="unwanted")``)."""
        if not self._assignable(ip):
            raise ValueError(f"the allocator granted {ip}, which is not a client address of the subnet")
        client = self._clients.get(client_key)
        if client is None or client.state not in (State.ALLOCATING_OFFER, State.ALLOCATING_ACK):
            keep = client is not None and ip in (client.offer_ip, client.lease.ip if client.lease else None)
            return [] if keep else [ReleaseAddress(client_key, ip, "unwanted")]
        holder = self._holder(ip, now)
        if holder is not None and holder != client_key:
            log.warning("allocator granted %s to %s but %s holds it here", ip, client_key.hex(), holder.hex())
            return self.allocation_failed(client_key, now)
        assert client.request is not None and client.via is not None
        if client.state is State.ALLOCATING_OFFER:
            self._move(client, "allocated", State.OFFERED)
            client.offer_ip = ip
            client.deadline = now + self.config.offer_hold_s
            self.counters.offers += 1
            return [self._replies.offer(client.request, client.via, ip)]
        if ip != client.wanted_ip:
            self._move(client, "allocated", NONE)
            self.counters.naks += 1
            return [
                ReleaseAddress(client_key, ip, "unwanted"),
                self._replies.nak(client.request, "address taken"),
            ]
        self._move(client, "allocated", State.BOUND)
        return self._bind(client, ip, now)

    def allocation_failed(self, client_key: bytes, now: float) -> list[DhcpAction]:
        """The allocator could not grant an address. A DISCOVER goes unanswered (the client retries);
        a REQUEST is NAKed so that the client starts over at once."""
        client = self._clients.get(client_key)
        if client is None or client.state not in (State.ALLOCATING_OFFER, State.ALLOCATING_ACK):
            return []
        nak = client.state is State.ALLOCATING_ACK
        assert client.request is not None
        request = client.request
        self._move(client, "failed", NONE)
        if nak:
            self.counters.naks += 1
            return [self._replies.nak(request, "no address available")]
        return []

    def expire(self, now: float) -> list[DhcpAction]:
        """Lapse offers, forget stale allocations and expire leases whose time has come."""
        actions: list[DhcpAction] = []
        for client in list(self._clients.values()):
            actions += self._expire_client(client, now)
        return actions

    def _expire_client(self, client: ClientRecord, now: float) -> list[DhcpAction]:
        actions: list[DhcpAction] = []
        if client.lease is not None and now >= client.lease.expires_at:
            log.info("lease of %s for %s expired", client.lease.ip, client.key.hex())
            if client.lease.ip != client.offer_ip:  # else the offer still holds it, and releases it
                actions.append(ReleaseAddress(client.key, client.lease.ip, "expired"))
            client.lease = None
            if client.state is State.BOUND:
                self._move(client, "expired", NONE)
        if client.state in (State.ALLOCATING_OFFER, State.ALLOCATING_ACK) and now >= client.deadline:
            log.info("allocation for %s timed out", client.key.hex())
            self._drop(client)
        elif client.state is State.OFFERED and now >= client.deadline:
            lease_ip = client.lease.ip if client.lease else None
            if client.offer_ip is not None and client.offer_ip != lease_ip:
                actions.append(ReleaseAddress(client.key, client.offer_ip, "unclaimed"))
            client.offer_ip = None
            self._move(client, "timeout", State.BOUND if lease_ip else NONE)
        return actions

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has work, or None."""
        times = [c.deadline for c in self._clients.values() if c.state is not State.BOUND]
        times += [c.lease.expires_at for c in self._clients.values() if c.lease]
        return min(times, default=None)

    # -- the lease table ----------------------------------------------------------------------------

    def leases(self) -> list[Lease]:
        return [c.lease for c in self._clients.values() if c.lease is not None]

    def export_leases(self, now: float) -> list[LeaseRecord]:
        """The live leases as plain data, for the node's state file."""
        return [
            LeaseRecord(
                client_key=lease.client_key.hex(),
                ip=str(lease.ip),
                mac=lease.mac.hex(),
                hostname=lease.hostname,
                remaining_s=round(lease.expires_at - now, 3),
            )
            for lease in self.leases()
            if lease.expires_at > now
        ]

    def import_leases(self, records: list[LeaseRecord], now: float) -> list[DhcpAction]:
        """Restore leases saved by :meth:`export_leases`. Returns a :class:`LeaseBound` per restored
        lease so the node can re-assert its claims. Raises ValueError on a malformed record (the
        state file is ours: a bad one is a bug or corruption, to be reported, not skipped)."""
        actions: list[DhcpAction] = []
        for record in records:
            try:
                key = bytes.fromhex(record["client_key"])
                ip = IPv4Address(record["ip"])
                mac = bytes.fromhex(record["mac"])
                remaining = float(record["remaining_s"])
                hostname = record["hostname"]
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"bad lease record {record!r}: {exc}") from exc
            if not key or len(mac) != 6 or not self._assignable(ip):
                raise ValueError(f"bad lease record {record!r}")
            if remaining <= 0:
                continue
            lease = Lease(key, ip, mac, hostname_of(hostname), now + remaining)
            client = self._clients.setdefault(key, ClientRecord(key))
            client.lease, client.state, client.hostname = lease, State.BOUND, lease.hostname
            actions.append(LeaseBound(key, ip, mac, lease.hostname, lease.expires_at))
        return actions

    # -- message handlers ---------------------------------------------------------------------------

    def _discover(self, key: bytes, msg: DhcpMessage, via: UdpFrame, now: float) -> list[DhcpAction]:
        client = self._clients.setdefault(key, ClientRecord(key))
        client.request, client.via = msg, via
        client.hostname = requested_hostname(msg) or client.hostname
        self._count(client.state, "discover")
        lease = client.lease if client.lease and client.lease.expires_at > now else None
        if client.state is State.OFFERED or lease is not None:
            self._move(client, "discover", State.OFFERED)
            client.offer_ip = client.offer_ip or (lease.ip if lease else None)
            client.deadline = now + self.config.offer_hold_s
            assert client.offer_ip is not None
            self.counters.offers += 1
            return [self._replies.offer(msg, via, client.offer_ip)]
        retransmission = client.state is State.ALLOCATING_OFFER
        self._move(client, "discover", State.ALLOCATING_OFFER)
        if retransmission and now < client.deadline:
            return []
        client.deadline = now + self.config.allocation_timeout_s
        wish = msg.requested_ip if msg.requested_ip and self._assignable(msg.requested_ip) else None
        return [AllocateAddress(key, wish, client.hostname)]

    def _request(self, key: bytes, msg: DhcpMessage, via: UdpFrame, now: float) -> list[DhcpAction]:
        client = self._clients.setdefault(key, ClientRecord(key))
        state_name, wanted = self._classify(msg, via)
        self._count(client.state, state_name)
        if state_name == "selecting-other":
            # The client chose another server: our offer lapses now (RFC 2131 §4.3.2).
            actions: list[DhcpAction] = []
            if client.state is State.OFFERED:
                lease_ip = client.lease.ip if client.lease else None
                if client.offer_ip is not None and client.offer_ip != lease_ip:
                    actions.append(ReleaseAddress(key, client.offer_ip, "unclaimed"))
                client.offer_ip = None
                self._move(client, "timeout", State.BOUND if client.lease else NONE)
            elif client.state is None and client.lease is None:
                self._forget(client)
            return actions
        client.request, client.via = msg, via
        client.hostname = requested_hostname(msg) or client.hostname
        lease = client.lease if client.lease and client.lease.expires_at > now else None
        held = {ip for ip in (client.offer_ip, lease.ip if lease else None) if ip is not None}
        if wanted is None or not self._assignable(wanted):
            return self._nak(client, msg, f"{state_name}: no valid address requested")
        if wanted in held:
            self._move(client, "request", State.BOUND)
            if client.offer_ip is not None and client.offer_ip != wanted:
                client.offer_ip = None
            return self._bind(client, wanted, now)
        if held or state_name == "selecting":
            # The client asks for something other than what we hold for it: its view is stale.
            return self._nak(client, msg, f"{state_name}: {wanted} is not this client's address")
        holder = self._holder(wanted, now)
        if holder is not None and holder != key:
            return self._nak(client, msg, f"{state_name}: {wanted} is leased to another client")
        retransmission = client.state is State.ALLOCATING_ACK and client.wanted_ip == wanted
        self._move(client, "request", State.ALLOCATING_ACK)
        if retransmission and now < client.deadline:
            return []
        client.wanted_ip = wanted
        client.deadline = now + self.config.allocation_timeout_s
        return [AllocateAddress(key, wanted, client.hostname)]

    def _classify(self, msg: DhcpMessage, via: UdpFrame) -> tuple[str, IPv4Address | None]:
        """RFC 2131 §4.3.2: which client state sent this REQUEST, and which address it wants."""
        server_id = msg.server_id
        if server_id is not None:
            return (
                "selecting" if server_id == self.config.server_ip else "selecting-other"
            ), msg.requested_ip
        if int(msg.ciaddr) == 0:
            return "init-reboot", msg.requested_ip
        unicast = via.dst_ip == self.config.server_ip
        return ("renewing" if unicast else "rebinding"), msg.ciaddr

    def _release(self, key: bytes, msg: DhcpMessage) -> list[DhcpAction]:
        client = self._clients.get(key)
        if client is None or client.lease is None or client.lease.ip != msg.ciaddr:
            return self._ignore(f"RELEASE of {msg.ciaddr} that {key.hex()} does not hold")
        log.info("%s released %s", key.hex(), msg.ciaddr)
        ip = client.lease.ip
        actions: list[DhcpAction] = [ReleaseAddress(key, ip, "released")]
        if client.offer_ip not in (None, ip):
            assert client.offer_ip is not None
            actions.append(ReleaseAddress(key, client.offer_ip, "unclaimed"))
        self._forget(client)
        return actions

    def _decline(self, key: bytes, msg: DhcpMessage) -> list[DhcpAction]:
        client = self._clients.get(key)
        ip = msg.requested_ip
        held = (
            client and ip is not None and ip in (client.offer_ip, client.lease.ip if client.lease else None)
        )
        if not held or client is None or ip is None:
            return self._ignore(f"DECLINE of {ip} that {key.hex()} was not given")
        log.info("%s declined %s: the address is in use", key.hex(), ip)
        self._forget(client)
        return [AddressDeclined(key, ip)]

    # -- helpers ------------------------------------------------------------------------------------

    def _bind(self, client: ClientRecord, ip: IPv4Address, now: float) -> list[DhcpAction]:
        assert client.request is not None and client.via is not None
        mac = client.request.client_mac
        previous = client.lease
        expires_at = now + self.config.lease_time_s
        client.lease = Lease(client.key, ip, mac, client.hostname, expires_at)
        client.offer_ip = client.wanted_ip = None
        self.counters.acks += 1
        if previous is None or previous.ip != ip:
            log.info("bound %s to %s (%s)", ip, client.key.hex(), client.hostname)
        actions: list[DhcpAction] = [self._replies.ack(client.request, client.via, ip)]
        if client.hostname and (previous is None or previous.hostname != client.hostname):
            actions.append(HostnameLearned(client.key, client.hostname))
        actions.append(LeaseBound(client.key, ip, mac, client.hostname, expires_at))
        return actions

    def _nak(self, client: ClientRecord, msg: DhcpMessage, why: str) -> list[DhcpAction]:
        log.info("NAK to %s: %s", client.key.hex(), why)
        self.counters.naks += 1
        actions: list[DhcpAction] = [self._replies.nak(msg, why)]
        lease_ip = client.lease.ip if client.lease else None
        if client.offer_ip is not None and client.offer_ip != lease_ip:
            actions.append(ReleaseAddress(client.key, client.offer_ip, "unclaimed"))
        client.offer_ip = client.wanted_ip = None
        self._move(client, "request", State.BOUND if client.lease else NONE)
        return actions

    def _move(self, client: ClientRecord, event: str, new: State | None) -> None:
        allowed = TRANSITIONS.get((client.state, event))
        if allowed is None or new not in allowed:
            raise RuntimeError(
                f"DHCP client {client.key.hex()}: no transition {client.state} --{event}--> {new}"
            )
        client.state = new
        if new is None and client.lease is None:
            self._forget(client)

    def _drop(self, client: ClientRecord) -> None:
        """An allocation attempt lapsed: back to BOUND if a lease remains, else forget the client."""
        client.state = State.BOUND if client.lease else None
        client.wanted_ip = None
        if client.state is None:
            self._forget(client)

    def _forget(self, client: ClientRecord) -> None:
        self._clients.pop(client.key, None)

    def _holder(self, ip: IPv4Address, now: float) -> bytes | None:
        for client in self._clients.values():
            if client.offer_ip == ip or (
                client.lease and client.lease.ip == ip and client.lease.expires_at > now
            ):
                return client.key
        return None

    def _assignable(self, ip: IPv4Address) -> bool:
        subnet = self.config.subnet
        return (
            ip in subnet
            and ip not in (subnet.network_address, subnet.broadcast_address, self.config.server_ip)
            and ip != self.config.router
        )

    def _ignore(self, why: str) -> list[DhcpAction]:
        self.counters.ignored += 1
        log.debug("ignoring DHCP message: %s", why)
        return []

    def _count(self, state: State | None, event: str) -> None:
        name = f"{state.value if state else 'none'}:{event}"
        self.counters.by_state[name] = self.counters.by_state.get(name, 0) + 1
