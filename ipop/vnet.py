"""I/O. The virtual network as a runtime component: the TAP device, the overlay and the DHT around the
sans-IO core (:class:`ipop.vnet_core.VnetCore`).

Theory of operation. :func:`network_components` builds, for a configuration with ``[network]``, the
TAP port (opened at once, so a missing privilege stops the node at start with one line) and the
:class:`VirtualNetwork`, which is the core's ``Outputs`` seam:

- frames the TAP port reads go to ``core.tap_frames`` in the batch they were read in; frames the core
  writes go straight to the device. With an offloading TAP (``[network] offload``, the default) they go
  to the fast path (:mod:`ipop.fastpath`) instead, which sends what it can on direct links in batches
  and hands the rest to the core as plain frames; it also takes the IPOP messages of direct links
  (``OverlayService.set_receiver``) and writes them, merged per socket wake-up, to the device;
- the core's overlay sends go to ``OverlayService.send``; messages of services IPOP and IPOP_CONTROL,
  and undeliverable notices, come back through the overlay's subscriptions;
- each DHT request becomes a task of the component's own ``TaskGroup`` that awaits the ``DhtClient``
  and hands the result back with its token; upstream DNS queries likewise, through aiodns
  (:mod:`ipop.upstream`);
- a tick (at the core's next deadline, at least once a second) runs the core's timers, follows the
  overlay's join state, and saves the lease table and client history to the state directory when they
  changed, so that a restarted node gives every machine its address back.

Every task belongs to the component's task group; cancelling ``run()`` ends them, saves the state and
closes the upstream resolver.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

from dht import Failed, OpResult, Reason
from overlay import Address, Delivered, Service, Undeliverable

from .config import IpopConfig
from .fastpath import CARRIED, FastPath
from .overlayport import DIRECT_PAYLOAD_MTU, OverlayService
from .state import StateDir
from .tap import TapPort
from .upstream import UpstreamDns
from .vnconfig import VnetConfig
from .vnet_core import VnetCore
from .vnevents import OP_CREATE, OP_DELETE, OP_GET, DhtRequest, ForwardQuery, Request
from .vnwire import HEADER_LEN

log = logging.getLogger(__name__)

TICK_S = 1.0
"""Longest time between two runs of the core's timers: DHCP offers and leases, mapping expiry and name
retries are all measured in seconds or more, so a second of granularity loses nothing, and the tick is
also when the join state is followed and the state saved."""

LEASES_RECORD = "leases"
HISTORY_RECORD = "dhcp-clients"


def virtual_mtu(configured: int | None, payload_mtu: int, direct_payload: int = 0) -> int:
    """The TAP device's MTU: what the overlay carries unfragmented less our header, or the configured
    MTU if that is smaller (a larger one is refused with a warning: it would fragment the underlay).

    With ``direct_payload`` (a TAP with offloads, whose fast path carries up to that on a direct link
    of an Ethernet-sized path) the MTU is made for that instead: 1425 rather than 1219 bytes for
    ``payload_mtu``'s worst case of a routed, tunnelled message. Per datagram that is 20 % more TCP
    payload, the data plane's cost being per datagram; TCP super-frames are still cut to each link's
    measured path, and packets that do not fit a narrower path get ICMP "fragmentation needed"."""
    most = max(payload_mtu - HEADER_LEN, direct_payload - CARRIED)
    if configured is None:
        return most
    if configured > most:
        log.warning("[network] mtu %d is more than the overlay carries; using %d", configured, most)
        return most
    return configured


def network_components(
    config: IpopConfig, state: StateDir, overlay: OverlayService, joined: Callable[[], bool]
) -> list[Any]:
    """The TAP port and the virtual network for ``config.network`` (which must be set). ``joined``
    tells whether the overlay has joined the other nodes."""
    network = config.network
    if network is None:
        raise ValueError("no [network] section")
    routed = overlay.payload_mtu - HEADER_LEN
    mtu = virtual_mtu(network.mtu, overlay.payload_mtu, DIRECT_PAYLOAD_MTU if network.offload else 0)
    mac = state.tap_mac()
    vnet = VirtualNetwork(config, state, overlay, joined, mtu=mtu, host_mac=mac, routed_mtu=min(routed, mtu))
    tap = TapPort(network.device, mtu=mtu, mac=mac, handler=vnet, offload=network.offload)
    vnet.attach(tap)
    return [tap, vnet]


class VirtualNetwork:
    name = "network"

    def __init__(
        self,
        config: IpopConfig,
        state: StateDir,
        overlay: OverlayService,
        joined: Callable[[], bool],
        *,
        mtu: int,
        host_mac: bytes,
        routed_mtu: int = 0,
    ) -> None:
        network = config.network
        assert network is not None
        self.network = network
        self.state = state
        self.overlay = overlay
        self.joined = joined
        self.tap: TapPort | None = None
        self._clock: Callable[[], float] = _now
        """The running loop's ``time`` once :meth:`run` started (``_now`` until then)."""
        vnet_config = VnetConfig(
            namespace=network.namespace,
            subnet=network.subnet,
            domain=network.domain,
            lease_seconds=network.lease_seconds,
            mtu=mtu,
            host_mac=host_mac,
            address=overlay.address,
            node_name=config.node.name,
            standalone=not config.overlay.bootstrap,
            routed_mtu=routed_mtu,
        )
        self.core = VnetCore(vnet_config, self, self._load_history())
        self.upstream: UpstreamDns | None = None
        self.fast: FastPath | None = None
        self._vframes = False
        self._group: asyncio.TaskGroup | None = None
        self._queued: list[Request] = []

    def attach(self, tap: TapPort) -> None:
        """Use ``tap`` for the machine's frames (and its offloads for the fast path)."""
        self.tap = tap
        self._vframes = bool(tap.device.frame_offset)
        self.fast = FastPath(
            self.core,
            self.overlay,
            tap_offload=self._vframes,
            write_vframe=tap.send_vframe,
            write_frame=tap.send,
        )

    # -- the core's Outputs ---------------------------------------------------------------------------

    def write_tap(self, frame: bytes) -> None:
        if self.tap is not None:
            self.tap.send(frame)

    def send(self, dest: Address, service: int, payload: bytes) -> None:
        self.overlay.send(dest, service, payload)

    def request(self, request: Request) -> None:
        if self._group is None:
            self._queued.append(request)
            return
        work = self._dht(request) if isinstance(request, DhtRequest) else self._forward(request)
        try:
            self._group.create_task(work)
        except RuntimeError:  # the group is shutting down: the node is stopping
            work.close()

    # -- inputs ---------------------------------------------------------------------------------------

    def tap_frames(self, frames: list[bytes]) -> None:
        # The loop's clock read directly: ``_now`` looks the running loop up, which in Python 3.11
        # costs a getpid system call, once per TAP wake-up (half the system calls of a ping's).
        now = self._clock()
        if self.fast is None:
            self.core.tap_frames(frames, now)
        elif self._vframes:
            self.fast.tap_vframes(frames, now)
        else:
            self.fast.tap_frames(frames, now)
        self.overlay.flush()

    def _delivered(self, msg: Delivered) -> None:
        self.core.delivered(msg, _now())

    def _undeliverable(self, event: Undeliverable) -> None:
        self.core.undeliverable(event, _now())

    async def _dht(self, request: DhtRequest) -> None:
        dht = self.overlay.dht
        result: OpResult
        try:
            if request.op == OP_CREATE:
                result = await dht.create(request.key, request.value, request.ttl, refresh=request.refresh)
            elif request.op == OP_GET:
                result = await dht.get(request.key)
            elif request.op == OP_DELETE:
                result = await dht.delete(request.key, request.value)
            else:
                result = await dht.put(request.key, request.value, request.ttl, refresh=request.refresh)
        except ValueError as exc:  # a key or value the DHT refuses: our bug, but not the node's end
            log.error("DHT %s of %r refused: %s", request.op, request.key, exc)
            result = Failed(Reason.REFUSED, str(exc))
        self.core.dht_done(request.token, result, _now())

    async def _forward(self, request: ForwardQuery) -> None:
        reply = None if self.upstream is None else await self.upstream.resolve(request.query)
        self.core.dns_forwarded(request.token, reply, _now())

    # -- running --------------------------------------------------------------------------------------

    async def run(self) -> None:
        self._clock = asyncio.get_running_loop().time
        self.upstream = UpstreamDns(self.network.dns_upstream, self.network.subnet)
        self.overlay.subscribe(Service.IPOP, self._delivered)
        if self.fast is not None:
            sink = self.fast if self._vframes else None  # frames built in place need an offloading TAP
            self.overlay.set_receiver(Service.IPOP, self.fast, self.fast.end_batch, sink)
        self.overlay.subscribe(Service.IPOP_CONTROL, self._delivered)
        self.overlay.subscribe_undeliverable(self._undeliverable)
        log.info(
            "virtual network %s: %s, DNS and DHCP at %s, MTU %d",
            self.network.namespace,
            self.network.subnet,
            self.core.server_ip,
            self.core.config.mtu,
        )
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                self.core.restore(self._load_leases(), _now())
                queued, self._queued = self._queued, []
                for request in queued:
                    self.request(request)
                await self._ticks()
        finally:
            self._group = None
            self._save(force=True)
            await self.upstream.close()

    async def _ticks(self) -> None:
        while True:
            now = _now()
            self.core.set_joined(self.joined(), now)
            self.core.handle_timer(now)
            self._save()
            when = self.core.get_timer()
            await asyncio.sleep(TICK_S if when is None else min(TICK_S, max(0.0, when - now)))

    # -- state ----------------------------------------------------------------------------------------

    def _load_leases(self) -> list[Any]:
        data = self.state.load_json(LEASES_RECORD)
        if data is None:
            return []
        if not isinstance(data, dict) or data.get("namespace") != self.network.namespace:
            log.info("lease table of another namespace in %s: not restored", self.state.path)
            return []
        leases = data.get("leases")
        return leases if isinstance(leases, list) else []

    def _load_history(self) -> dict[bytes, IPv4Address]:
        data = self.state.load_json(HISTORY_RECORD)
        history: dict[bytes, IPv4Address] = {}
        if isinstance(data, dict) and data.get("namespace") == self.network.namespace:
            for key, ip in (data.get("clients") or {}).items():
                try:
                    address = IPv4Address(ip)
                    client = bytes.fromhex(key)
                except ValueError:
                    continue
                if address in self.network.subnet:
                    history[client] = address
        return history

    def _save(self, force: bool = False) -> None:
        local, claims = self.core.local, self.core.claims
        if force or local.leases_changed:
            local.leases_changed = False
            leases = local.export_leases(_now())
            self.state.save_json(LEASES_RECORD, {"namespace": self.network.namespace, "leases": leases})
        if force or claims.changed:
            claims.changed = False
            clients = {key.hex(): str(ip) for key, ip in claims.history.items()}
            self.state.save_json(HISTORY_RECORD, {"namespace": self.network.namespace, "clients": clients})

    def status(self) -> dict[str, Any]:
        status = self.core.status(_now())
        if self.fast is not None:
            status["fast_path"] = self.fast.status()
        if self.upstream is not None:
            status["dns"]["upstream"] = [f"{h}:{p}" for h, p in self.upstream.servers] or None
        return status


def _now() -> float:
    return asyncio.get_running_loop().time()
