"""I/O. The overlay and its DHT, running for real: one UDP socket, one ``OverlayNode``, one ``DhtNode``.

``OverlayPort`` is the component that ``ipop up`` runs for every node (a pure overlay node such as a
bootstrap node has only this one). It binds ``[node] listen``, drives the overlay core with
``overlay.UdpDriver``, hosts a ``DhtNode`` on it (its own timer on the event loop) and offers the node's
other components the :class:`OverlayService` seam: send a payload to an overlay address, subscribe to a
service's messages, and the DHT as awaitable operations. It registers the ``dht.*`` control commands and
puts the overlay's view (links, ring neighbours, N estimate, NAT, counters) in ``ipop status``.

On stop it says goodbye to every peer (``Close``), so that they repair the ring at once instead of
waiting for keepalives to time out.

The data plane (issue 7): the node keeps one AEAD context per session (``cache_cipher_contexts``),
measures the path MTU of every direct link that carries data, and the driver runs in its fast mode
(DF, UDP_SEGMENT, UDP_GRO). The seam's :meth:`OverlayService.direct_limit` and
:meth:`OverlayService.send_direct` send batches on direct links without per-message objects, and
:meth:`OverlayService.set_receiver` takes a service's messages from direct links by a call, or
decrypted straight into the service's own buffer (an ``AppSink``), with a callback after each batch
the socket delivered.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from dht import (
    AlreadyOwned,
    Created,
    Deleted,
    DhtClient,
    DhtConfig,
    DhtNode,
    Failed,
    OpResult,
    OwnershipLost,
    Stored,
    Values,
)
from overlay import (
    APP_HEADER,
    ASSUMED_PAYLOAD,
    DATA_OVERHEAD,
    Address,
    AppReceiver,
    AppSink,
    Delivered,
    Endpoint,
    JoinStateChanged,
    NeighboursChanged,
    OverlayEvent,
    OverlayNode,
    PmtuConfig,
    Service,
    UdpDriver,
    Undeliverable,
    interface_addresses,
    lan_broadcasts,
    open_udp_socket,
)

from .control import ControlError

if TYPE_CHECKING:
    from .runtime import NodeContext

log = logging.getLogger(__name__)

UNDERLAY_MTU = 1500
"""The underlay's MTU assumed until path MTU discovery measures it (Ethernet's, the internet's usual)."""

UDP_IP_HEADERS = 48
"""IPv6 + UDP headers (IPv4 needs 28): the worst case of the underlay's own headers."""

ROUTED_OVERHEAD = 64 + 20
"""A routed message's header with a via address (64 bytes), plus the relay address a tunnelled link
adds."""

PAYLOAD_MTU = UNDERLAY_MTU - UDP_IP_HEADERS - 2 * (DATA_OVERHEAD + ROUTED_OVERHEAD)
"""The largest payload :meth:`OverlayPort.send` carries without fragmenting on the underlay, whatever
the path: routed over a link that is itself tunnelled through the overlay (two seals, two headers)."""

DIRECT_PAYLOAD_MTU = ASSUMED_PAYLOAD - DATA_OVERHEAD - APP_HEADER
"""What one datagram of :meth:`OverlayPort.send_direct` carries on a direct link over an IPv4 path
of Ethernet's 1500 bytes (1440): the size the data plane's virtual MTU is made for. A narrower path
(measured per link) cuts TCP super-frames smaller and answers other packets with ICMP."""


class OverlayService(Protocol):
    """What the node's other components (the TAP handler) use of the overlay."""

    @property
    def address(self) -> Address: ...

    @property
    def dht(self) -> DhtClient: ...

    @property
    def payload_mtu(self) -> int: ...

    def send(self, dest: Address, service: int, payload: bytes) -> None: ...

    def subscribe(self, service: int, handler: Callable[[Delivered], None]) -> None: ...

    def subscribe_undeliverable(self, handler: Callable[[Undeliverable], None]) -> None: ...

    def direct_limit(self, dest: Address) -> int:
        """The largest payload one datagram carries to ``dest`` on a direct link now (0: no direct
        link; use :meth:`send`)."""
        ...

    def send_direct(
        self, dest: Address, service: int, payloads: list[bytes | memoryview], prefixed: bool = False
    ) -> bool:
        """Seal ``payloads`` (each at most :meth:`direct_limit`) for ``dest`` and send them together;
        False when there is no direct link to send them on. ``prefixed``: each payload begins with
        ``overlay.app_prefix(service)`` already (``DataPath.seal_direct``)."""
        ...

    def set_receiver(
        self,
        service: int,
        receiver: AppReceiver,
        end_batch: Callable[[], None],
        sink: AppSink | None = None,
    ) -> None:
        """Hand ``service``'s messages from direct links to ``receiver`` by a call each (the others
        still come through :meth:`subscribe`), and call ``end_batch`` after every batch of datagrams
        that the socket delivered. With a ``sink``, the messages of sessions the fast path knows are
        decrypted straight into the sink's buffer instead (``receiver`` keeps the rest)."""
        ...

    def flush(self) -> None:
        """Send what the overlay queued while the caller fed it (e.g. the probes a new direct link's
        path MTU search starts with)."""
        ...


class OverlayPort:
    """The running overlay node and DHT of ``ipop up`` (see the module docstring)."""

    name = "overlay"

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.loop = asyncio.get_running_loop()
        config = ctx.config
        self.config = replace(config.overlay, bootstrap=ctx.bootstrap)
        host, port = config.node.listen
        self.sock = open_udp_socket(host, port)
        bound = self.sock.getsockname()[1]
        hosts = [host] if host not in ("0.0.0.0", "::") else interface_addresses()
        lan = ":" not in host and config.overlay_options.lan_discovery
        broadcasts = lan_broadcasts(host) if lan else []
        stun = _resolve_stun(
            config.overlay_options.stun_servers, socket.AF_INET6 if ":" in host else socket.AF_INET
        )
        rng = random.SystemRandom()
        self.node = OverlayNode(
            ctx.identity,
            self.config,
            rng,
            self.loop.time(),
            local_endpoints=tuple((h, bound) for h in hosts),
            suite=config.overlay_options.suite,
            cache_cipher_contexts=True,
            pmtu=PmtuConfig(),
            lan_broadcast=tuple((b, bound) for b in broadcasts),
            stun_servers=stun,
        )
        self.node.log_prefix = ""  # the node's log prefix already names it
        self.dht_node = DhtNode(self.node, ctx.identity, DhtConfig(), rng)
        self._handlers: dict[int, list[Callable[[Delivered], None]]] = {}
        self._undeliverable: list[Callable[[Undeliverable], None]] = []
        self._dht_timer: asyncio.TimerHandle | None = None
        self._dht_timer_at: float | None = None
        self._flush_scheduled = False
        self._join_state = "joined" if not self.config.bootstrap else "bootstrapping"
        self._dht = DhtClient(self.dht_node, self.loop.time, self._schedule_flush)
        self.driver = UdpDriver(
            self.node, self.sock, on_event=self._on_event, fast=True, on_too_big=self.node.datapath.too_big
        )
        if broadcasts and host != "0.0.0.0":
            # A socket bound to a unicast address never sees broadcasts: one socket per LAN does.
            # LAN discovery is an optimisation: a port taken on the broadcast address (another program,
            # another node on this host) costs the beacons we would hear, never the node's start.
            for broadcast in broadcasts:
                try:
                    self.driver.add_listener(open_udp_socket(broadcast, bound))
                except OSError as exc:
                    log.warning("LAN beacons to %s:%d will not be heard: %s", broadcast, bound, exc)
        log.info("overlay listening on %s:%d%s", host, bound, f"; LAN beacons to {broadcasts}" if lan else "")
        for cmd, handler in (
            ("dht.get", self._cmd_get),
            ("dht.put", self._cmd_put),
            ("dht.create", self._cmd_create),
            ("dht.delete", self._cmd_delete),
        ):
            ctx.control.register(cmd, handler)

    # -- the OverlayService seam ---------------------------------------------------------------------

    @property
    def address(self) -> Address:
        return self.node.address

    @property
    def dht(self) -> DhtClient:
        return self._dht

    @property
    def payload_mtu(self) -> int:
        return PAYLOAD_MTU

    @property
    def joined(self) -> bool:
        """Whether the overlay has joined the ring (always, for the first node of a new overlay): the
        virtual network claims addresses only then, so that a node that reaches no one (or holds the
        wrong secret) never hands out an address that the rest of the network does not know about."""
        return self._join_state == "joined"

    @property
    def local_port(self) -> int:
        return int(self.sock.getsockname()[1])

    def send(self, dest: Address, service: int, payload: bytes) -> None:
        self.node.send(dest, service, payload, self.loop.time())
        self.driver.flush()

    def subscribe(self, service: int, handler: Callable[[Delivered], None]) -> None:
        if service in (Service.OVERLAY, Service.TUNNEL, Service.DHT):
            raise ValueError(f"service {service} belongs to the overlay itself")
        self._handlers.setdefault(service, []).append(handler)

    def subscribe_undeliverable(self, handler: Callable[[Undeliverable], None]) -> None:
        self._undeliverable.append(handler)

    def direct_limit(self, dest: Address) -> int:
        return self.node.datapath.direct_limit(dest, self.loop.time())

    def send_direct(
        self, dest: Address, service: int, payloads: list[bytes | memoryview], prefixed: bool = False
    ) -> bool:
        sealed = self.node.datapath.seal_direct(dest, service, payloads, self.loop.time(), prefixed=prefixed)
        if sealed is None:
            return False
        endpoint, datagrams = sealed
        self.driver.send_datagrams(datagrams, endpoint)
        return True

    def set_receiver(
        self,
        service: int,
        receiver: AppReceiver,
        end_batch: Callable[[], None],
        sink: AppSink | None = None,
    ) -> None:
        if service in (Service.OVERLAY, Service.TUNNEL, Service.DHT):
            raise ValueError(f"service {service} belongs to the overlay itself")
        self.node.datapath.receivers[service] = receiver
        if sink is not None:
            self.node.datapath.set_sink(service, sink)
        self.driver.after_batch.append(end_batch)
        self.driver.fast_receive = self.node.datapath.receive
        self.driver.fast_receive_many = self.node.datapath.receive_many

    def flush(self) -> None:
        """Send what the node queued meanwhile (probes started by the data path)."""
        self.driver.flush()

    # -- the component -------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await asyncio.Event().wait()  # everything happens in callbacks; this only waits for the stop
        finally:
            self._dht.close()
            if self._dht_timer is not None:
                self._dht_timer.cancel()
            self.node.close(self.loop.time())
            self.driver.close()  # flushes the Close messages first

    def status(self) -> dict[str, Any]:
        status = self.node.status(self.loop.time())
        status["listen_port"] = self.local_port
        status["dht"] = self.dht_node.stats.as_dict()
        datapath = self.node.datapath
        status["fast_rx"] = {"datagrams": datapath.rx_datagrams, "bytes": datapath.rx_bytes}
        status["socket"] = self.driver.status()
        return status

    # -- events and timers ---------------------------------------------------------------------------

    def _on_event(self, event: OverlayEvent) -> None:
        now = self.loop.time()
        if isinstance(event, Delivered):
            if event.service == Service.DHT:
                self.dht_node.handle_delivered(event, now)
                self._flush_dht()
                return
            for handler in self._handlers.get(event.service, ()):
                handler(event)
        elif isinstance(event, NeighboursChanged):
            self.dht_node.handle_neighbours(event, now)
            self._flush_dht()
        elif isinstance(event, Undeliverable):
            for undeliverable in self._undeliverable:
                undeliverable(event)
        elif isinstance(event, JoinStateChanged):
            self._join_state = event.state
            log.info("overlay %s: %s", event.state, event.detail)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_from_loop)

    def _flush_from_loop(self) -> None:
        self._flush_scheduled = False
        self._flush_dht()
        self.driver.flush()

    def _flush_dht(self) -> None:
        """Hand the DHT's events to their awaiters and re-arm its timer. What it sent went into the
        overlay core; the driver flushes that when this event's handling ends."""
        while (event := self.dht_node.next_event()) is not None:
            if not self._dht.dispatch(event) and isinstance(event, OwnershipLost):
                log.warning("DHT: lost ownership of %r", event)
        deadline = self.dht_node.get_timer()
        if deadline != self._dht_timer_at:
            if self._dht_timer is not None:
                self._dht_timer.cancel()
            self._dht_timer = None if deadline is None else self.loop.call_at(deadline, self._dht_fire)
            self._dht_timer_at = deadline

    def _dht_fire(self) -> None:
        self._dht_timer = None
        self._dht_timer_at = None
        self.dht_node.handle_timer(self.loop.time())
        self._flush_dht()
        self.driver.flush()

    # -- control commands ----------------------------------------------------------------------------

    async def _cmd_get(self, args: dict[str, Any]) -> Any:
        result = await self._dht.get(_key(args))
        if isinstance(result, Values):
            return [
                {
                    "value": _text(v.value),
                    "owner": v.owner.hex()[:16],
                    "ttl": round(v.ttl, 1),
                    "kind": str(v.kind),
                }
                for v in result.values
            ]
        return _answer(result)

    async def _cmd_put(self, args: dict[str, Any]) -> Any:
        return _answer(await self._dht.put(_key(args), _value(args), _ttl(args)))

    async def _cmd_create(self, args: dict[str, Any]) -> Any:
        return _answer(await self._dht.create(_key(args), _value(args), _ttl(args)))

    async def _cmd_delete(self, args: dict[str, Any]) -> Any:
        return _answer(await self._dht.delete(_key(args), _value(args)))


def _key(args: dict[str, Any]) -> bytes:
    key = args.get("key")
    if not isinstance(key, str) or not key:
        raise ControlError("key: a non-empty string is required")
    return key.encode()


def _value(args: dict[str, Any]) -> bytes:
    value = args.get("value")
    if not isinstance(value, str):
        raise ControlError("value: a string is required")
    return value.encode()


def _ttl(args: dict[str, Any]) -> int:
    ttl = args.get("ttl")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
        raise ControlError("ttl: a positive number of seconds is required")
    return max(1, round(ttl))


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def _answer(result: OpResult) -> dict[str, Any]:
    if isinstance(result, Failed):
        raise ControlError(f"{result.reason}: {result.detail}")
    if isinstance(result, AlreadyOwned):
        raise ControlError(f"{_text(result.key)} is owned by another node ({result.owner.hex()[:16]})")
    if isinstance(result, Created | Stored):
        return {"key": _text(result.key), "value": _text(result.value), "ttl": result.ttl}
    if isinstance(result, Deleted):
        return {"key": _text(result.key), "deleted": _text(result.value)}
    return {"result": repr(result)}


def _resolve_stun(servers: tuple[Endpoint, ...], family: int) -> tuple[Endpoint, ...]:
    """The configured STUN servers as IP endpoints of the overlay socket's family (names resolved once,
    at start; a name that does not resolve is skipped with a warning: STUN is optional)."""
    out: list[Endpoint] = []
    for host, port in servers:
        try:
            infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
        except OSError as exc:
            log.warning("STUN server %s:%d skipped: %s", host, port, exc)
            continue
        endpoint = (str(infos[0][4][0]), int(infos[0][4][1]))
        if endpoint not in out:
            out.append(endpoint)
    return tuple(out)
