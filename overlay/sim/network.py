"""Pure. An in-memory datagram internet: hosts, LANs, NAT boxes, latency, loss, duplication, partitions.

Theory of operation
-------------------
A datagram that a host sends takes one of four paths, decided when it is sent:

* **LAN**: the destination address is on the sender's LAN. It arrives after the LAN delay with the
  sender's own endpoint as source; no NAT is involved and the internet cannot lose it.
* **Broadcast** to ``255.255.255.255``: one LAN copy to every *other* host of the sender's LAN bound to
  the destination port. A public host without a ``lan=`` label has no LAN, so nobody hears it.
* **Hairpin**: a host behind a NAT sends to its own NAT's public address. If the box hairpins, the
  datagram is translated out and back in (``outbound`` then ``inbound``) and arrives in a LAN's time
  from the sender's public mapping; otherwise it is dropped.
* **Internet**: the sender's NAT (if any) translates the source at once (``outbound``: this is what
  opens the mapping). A datagram with TTL 1 or 2 dies next, in the core, two router hops from the
  sender: it never reaches the far NAT or host (the low-TTL trick of opening one's own mapping).
  Otherwise it may be lost or duplicated, and is scheduled to arrive after the internet delay. On
  arrival the destination is looked up *at that instant*: a public host, or a NAT box's public address,
  whose ``inbound`` then decides (with the state it has then, which is what makes simultaneous hole
  punching work or fail as it does for real) which private host gets it.

A partition cuts the internet between groups of *sites* (public addresses: a public host's, or a NAT
box's, which takes its whole LAN along). It is checked on arrival, so datagrams in flight when the cut
happens are lost too; LAN and hairpin traffic never crosses the internet and is never cut.

Every drop is counted for the sender and the network under a ``Drop`` reason and
logged at DEBUG. Every delivery is counted and, with ``trace``, folded into a SHA-256 digest of
(time in integer microseconds, source, destination, payload): two runs with the same seed produce the
same digest exactly when they delivered the same datagrams at the same instants.

Randomness: one ``random.Random`` feeds every draw (jitter, loss, duplication, site positions), in the
order the events happen; draws are skipped for probabilities of zero, so a lossless run spends exactly
one draw per datagram.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Callable, Iterable
from random import Random

from ..events import Endpoint
from .host import SimHost
from .lan import Lan
from .model import Counters, Drop, LatencyModel
from .scheduler import Scheduler
from .seams import DatagramCore, NatBox

logger = logging.getLogger(__name__)

BROADCAST = "255.255.255.255"
"""The limited-broadcast address: a datagram to it stays on the sender's LAN (LAN discovery beacons)."""

_CORE_EXPIRY_TTL = 2
"""A datagram with a TTL up to this expires in the internet core. Hop 1 is the sender's own NAT (or
first router), hop 2 the provider's router; the far NAT is at least hop 3. The natlab measurements used
TTL 2 to open the own mapping without reaching the peer (reference/natlab.md, section B)."""

_INV_SQRT2 = 0.7071067811865476
"""1/sqrt(2): scales a distance in the unit square so that opposite corners are 1 apart."""


class Network:
    """The simulated internet. All hosts share one ``Scheduler`` and one ``Random``."""

    __slots__ = (
        "_all",
        "_arrive_cb",
        "_call_at",
        "_digest",
        "_duplicate",
        "_groups",
        "_ip_lan",
        "_labelled",
        "_lan_base",
        "_lan_jitter",
        "_latency",
        "_loss",
        "_nat_lans",
        "_public",
        "_public_ips",
        "_rng",
        "_site_xy",
        "_wan_base",
        "_wan_jitter",
        "_wan_spread",
        "counters",
        "rng",
        "scheduler",
    )

    def __init__(
        self,
        scheduler: Scheduler,
        rng: Random,
        latency: LatencyModel | None = None,
        loss: float = 0.0,
        duplicate: float = 0.0,
        *,
        trace: bool = True,
    ) -> None:
        self.scheduler = scheduler
        self.rng = rng
        self._latency = model = latency if latency is not None else LatencyModel()
        self.counters = Counters()
        """Totals over every host, removed ones included."""
        self._rng = rng.random
        self._call_at = scheduler.call_at
        self._arrive_cb = self._arrive
        # The uniform draws are base - jitter + (2 * jitter) * random(); precomputed for the inner loop.
        self._wan_base = model.base - model.jitter
        self._wan_jitter = 2.0 * model.jitter
        self._wan_spread = model.spread * _INV_SQRT2
        self._lan_base = model.lan - model.lan_jitter
        self._lan_jitter = 2.0 * model.lan_jitter
        self._loss = 0.0
        self._duplicate = 0.0
        self.impair(loss=loss, duplicate=duplicate)
        self._digest = hashlib.sha256() if trace else None
        self._all: dict[SimHost, None] = {}
        self._public: dict[Endpoint, SimHost] = {}
        self._public_ips: dict[str, int] = {}
        self._ip_lan: dict[str, Lan | None] = {}
        self._labelled: dict[str, Lan] = {}
        self._nat_lans: dict[str, Lan] = {}
        self._site_xy: dict[str, tuple[float, float]] = {}
        self._groups: dict[str, int] | None = None

    @property
    def latency(self) -> LatencyModel:
        """The latency model, fixed when the network was made."""
        return self._latency

    # ----------------------------------------------------------------------------- topology

    def add_host(
        self,
        ip: str,
        port: int,
        core: DatagramCore,
        *,
        nat: NatBox | None = None,
        lan: str | None = None,
        after_activity: Callable[[SimHost], None] | None = None,
    ) -> SimHost:
        """Bind ``core`` to ``(ip, port)`` and start it (its queued datagrams go out, its timer is
        armed). With ``nat`` the host sits behind that box, ``ip`` is private and the box's hosts form
        a LAN; with ``lan`` a public host joins the public LAN of that label."""
        ipaddress.IPv4Address(ip)  # raises ValueError on anything else
        if not 0 < port < 65536:
            raise ValueError(f"port {port!r} out of range")
        if ip == BROADCAST:
            raise ValueError("a host cannot own the broadcast address")
        site: Lan | None
        if nat is not None:
            if lan is not None:
                raise ValueError("hosts behind a NAT box are on the box's LAN; do not give lan=")
            site = self._nat_lan(nat)
            if (ip, port) in site.hosts:
                raise ValueError(f"{ip}:{port} is already bound behind {nat.public_ip}")
            x, y = site.x, site.y
        else:
            site = self._public_site(ip, port, lan)
            x, y = self._site_xy[ip]
        host = SimHost(ip, port, core, self.scheduler, self._send, nat=nat, lan=site, x=x, y=y,
                       after_activity=after_activity)  # fmt: skip
        if site is not None:
            site.add(host)
        if nat is None:
            self._public[host.endpoint] = host
        self._all[host] = None
        logger.debug("host %s added%s", host.trace_tag, f" behind {nat.public_ip}" if nat else "")
        host.poke()
        return host

    def remove_host(self, host: SimHost) -> None:
        """Crash ``host``: its timer and every datagram still in flight to it vanish."""
        if not host.alive or host not in self._all:
            raise ValueError(f"{host!r} is not on this network")
        del self._all[host]
        host._detach()
        if host.lan is not None:
            host.lan.remove(host)
        if host.nat is None:
            del self._public[host.endpoint]
            left = self._public_ips[host.ip] - 1
            if left:
                self._public_ips[host.ip] = left
            else:
                del self._public_ips[host.ip]
                del self._ip_lan[host.ip]
                if host.lan is None:
                    del self._site_xy[host.ip]
        logger.debug("host %s removed", host.trace_tag)

    @property
    def hosts(self) -> list[SimHost]:
        """The hosts on the network, in the order they were added."""
        return list(self._all)

    def host_at(self, endpoint: Endpoint, nat: NatBox | None = None) -> SimHost | None:
        """The host bound to ``endpoint`` on the internet, or on the LAN behind ``nat``."""
        if nat is None:
            return self._public.get(endpoint)
        site = self._nat_lans.get(nat.public_ip)
        return site.hosts.get(endpoint) if site is not None and site.nat is nat else None

    def _nat_lan(self, nat: NatBox) -> Lan:
        public_ip = nat.public_ip
        site = self._nat_lans.get(public_ip)
        if site is not None:
            if site.nat is not nat:
                raise ValueError(f"another NAT box already owns {public_ip}")
            return site
        ipaddress.IPv4Address(public_ip)
        if public_ip in self._public_ips:
            raise ValueError(f"{public_ip} is a public host's address, it cannot be a NAT box's")
        x, y = self._place()
        site = Lan(f"nat {public_ip}", nat, x, y)
        self._nat_lans[public_ip] = site
        self._site_xy[public_ip] = (x, y)
        return site

    def _public_site(self, ip: str, port: int, label: str | None) -> Lan | None:
        if ip in self._nat_lans:
            raise ValueError(f"{ip} is a NAT box's public address")
        if (ip, port) in self._public:
            raise ValueError(f"{ip}:{port} is already bound")
        site = self._labelled.get(label) if label is not None else None
        if label is not None and site is None:
            site = self._labelled[label] = Lan(label, None, *self._place())
        if ip in self._public_ips:
            if self._ip_lan[ip] is not site:
                raise ValueError(f"{ip} is already bound on another LAN")
            self._public_ips[ip] += 1
        else:
            self._public_ips[ip] = 1
            self._ip_lan[ip] = site
            self._site_xy[ip] = (site.x, site.y) if site is not None else self._place()
        return site

    def _place(self) -> tuple[float, float]:
        """A random site position for the latency spread (no draw at all when it is off)."""
        if not self._wan_spread:
            return (0.0, 0.0)
        return (self._rng(), self._rng())

    # ----------------------------------------------------------------------------- impairments

    def impair(self, *, loss: float | None = None, duplicate: float | None = None) -> None:
        """Set the internet's random loss and duplication probabilities (LAN traffic is exempt; use
        ``SimHost.impair`` for a bad access link)."""
        for name, value in (("loss", loss), ("duplicate", duplicate)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], not {value!r}")
        if loss is not None:
            self._loss = float(loss)
        if duplicate is not None:
            self._duplicate = float(duplicate)

    @property
    def loss(self) -> float:
        return self._loss

    @property
    def duplicate(self) -> float:
        return self._duplicate

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Cut the internet between groups of public addresses (public hosts' or NAT boxes'). Addresses
        in no group form one more group together. Replaces any earlier partition."""
        table: dict[str, int] = {}
        for index, group in enumerate(groups, start=1):
            for ip in group:
                if ip in table:
                    raise ValueError(f"{ip} is in two groups of the partition")
                table[ip] = index
        self._groups = table
        logger.info("network partitioned into %d groups (+ the rest)", len(set(table.values())))

    def heal(self) -> None:
        """End the partition."""
        self._groups = None
        logger.info("network partition healed")

    @property
    def partitioned(self) -> bool:
        return self._groups is not None

    def trace_digest(self) -> str:
        """Hex SHA-256 over every delivery so far (raises if the network was made with trace=False)."""
        if self._digest is None:
            raise RuntimeError("this network keeps no trace (trace=False)")
        return self._digest.hexdigest()

    # ----------------------------------------------------------------------------- datagram paths

    def _send(self, host: SimHost, payload: bytes, dst: Endpoint, ttl: int, now: float) -> None:
        """Every datagram a host sends enters here (``SimHost`` calls it while it settles)."""
        size = len(payload)
        counters = host.counters
        counters.sent += 1
        counters.sent_bytes += size
        total = self.counters
        total.sent += 1
        total.sent_bytes += size
        dip = dst[0]
        lan = host.lan
        if lan is not None and dip in lan.ips:
            self._send_lan(host, lan, dst, payload, now)
            return
        if dip == BROADCAST:
            if lan is not None:
                for peer in lan.by_port.get(dst[1], ()):
                    if peer is not host:
                        self._send_lan(host, lan, peer.endpoint, payload, now)
            return
        src = host.endpoint
        nat = host.nat
        if nat is not None:
            if dip == nat.public_ip:
                self._send_hairpin(host, nat, dst, payload, now)
                return
            mapped = nat.outbound(src, dst, now)
            if mapped is None:
                self._drop(host, Drop.NAT_OUT, dst)
                return
            src = mapped
        if 0 < ttl <= _CORE_EXPIRY_TTL:
            self._drop(host, Drop.TTL, dst)
            return
        rng = self._rng
        loss, link_loss = self._loss, host.loss
        if (loss or link_loss) and rng() < loss + link_loss - loss * link_loss:
            self._drop(host, Drop.LOSS, dst)
            return
        self._call_at(now + self._wan_delay(host, dip), self._arrive_cb, host, src, dst, payload)
        dup, link_dup = self._duplicate, host.duplicate
        if (dup or link_dup) and rng() < dup + link_dup - dup * link_dup:
            counters.duplicated += 1
            total.duplicated += 1
            self._call_at(now + self._wan_delay(host, dip), self._arrive_cb, host, src, dst, payload)

    def _wan_delay(self, host: SimHost, dip: str) -> float:
        delay = self._wan_base + self._wan_jitter * self._rng()
        if self._wan_spread:
            far = self._site_xy.get(dip)
            if far is not None:
                dx, dy = host.x - far[0], host.y - far[1]
                delay += self._wan_spread * (dx * dx + dy * dy) ** 0.5
        return delay

    def _send_lan(self, host: SimHost, lan: Lan, dst: Endpoint, payload: bytes, now: float) -> None:
        rng = self._rng
        if host.loss and rng() < host.loss:
            self._drop(host, Drop.LOSS, dst)
            return
        base, jitter, arrive = self._lan_base, self._lan_jitter, self._arrive_lan
        self._call_at(now + base + jitter * rng(), arrive, host, lan, dst, payload)
        if host.duplicate and rng() < host.duplicate:
            host.counters.duplicated += 1
            self.counters.duplicated += 1
            self._call_at(now + base + jitter * rng(), arrive, host, lan, dst, payload)

    def _send_hairpin(self, host: SimHost, nat: NatBox, dst: Endpoint, payload: bytes, now: float) -> None:
        if not getattr(nat, "hairpin", False):
            self._drop(host, Drop.HAIRPIN, dst)
            return
        mapped = nat.outbound(host.endpoint, dst, now)
        if mapped is None:
            self._drop(host, Drop.NAT_OUT, dst)
            return
        if host.loss and self._rng() < host.loss:
            self._drop(host, Drop.LOSS, dst)
            return
        # Back in through the box, on arrival, exactly like a datagram from the internet; the source
        # and destination are the same site, so no partition can cut it.
        delay = self._lan_base + self._lan_jitter * self._rng()
        self._call_at(now + delay, self._arrive_cb, host, mapped, dst, payload)

    def _arrive(self, sender: SimHost, src: Endpoint, dst: Endpoint, payload: bytes) -> None:
        """A datagram reaches the far edge of the internet: a public host, or a NAT box's public side."""
        groups = self._groups
        if groups is not None and groups.get(src[0], 0) != groups.get(dst[0], 0):
            self._drop(sender, Drop.PARTITION, dst)
            return
        now = self.scheduler.now
        host = self._public.get(dst)
        if host is None:
            site = self._nat_lans.get(dst[0])
            if site is None:
                self._drop(sender, Drop.NO_LISTENER if dst[0] in self._public_ips else Drop.NO_ROUTE, dst)
                return
            private = site.nat.inbound(src, dst, now)  # type: ignore[union-attr]  # NAT LANs have a box
            if private is None:
                self._drop(sender, Drop.NAT_IN, dst)
                return
            host = site.hosts.get(private)
            if host is None:
                self._drop(sender, Drop.NO_LISTENER, private)
                return
        self._deliver(sender, host, src, payload, now)

    def _arrive_lan(self, sender: SimHost, lan: Lan, dst: Endpoint, payload: bytes) -> None:
        """A LAN datagram arrives; its source is the sender's own endpoint."""
        host = lan.hosts.get(dst)
        if host is None:
            self._drop(sender, Drop.NO_LISTENER, dst)
            return
        self._deliver(sender, host, sender.endpoint, payload, self.scheduler.now)

    def _deliver(self, sender: SimHost, host: SimHost, src: Endpoint, payload: bytes, now: float) -> None:
        if host.loss and self._rng() < host.loss:
            self._drop(sender, Drop.LOSS, host.endpoint)
            return
        size = len(payload)
        counters = host.counters
        counters.received += 1
        counters.received_bytes += size
        total = self.counters
        total.received += 1
        total.received_bytes += size
        digest = self._digest
        if digest is not None:
            digest.update(f"{round(now * 1e6)} {src[0]}:{src[1]} {host.trace_tag} {size}\n".encode())
            digest.update(payload)
        host.core.receive_datagram(payload, src, now)
        host._settle(now)

    def _drop(self, sender: SimHost, reason: Drop, dst: Endpoint) -> None:
        drops = sender.counters.drops
        drops[reason] = drops.get(reason, 0) + 1
        drops = self.counters.drops
        drops[reason] = drops.get(reason, 0) + 1
        logger.debug("drop (%s) %s -> %s:%s", reason, sender.trace_tag, dst[0], dst[1])
