"""Pure. A simulated host: one :class:`DatagramCore` bound to one UDP endpoint, driven by the scheduler.

Theory of operation
-------------------
The host does for its core what the real UDP driver does: it hands the core each datagram that the
network delivers (``receive_datagram``) and wakes it when its deadline comes (``handle_timer``). After
every call into the core it *settles*: it lets the harness look at the core (``after_activity``, e.g.
to feed the core's events to a DHT stacked on it), sends everything ``datagrams_to_send`` returns,
and re-arms the core's timer if ``get_timer`` changed.

The timer is cancelled lazily by generation. Each re-arm bumps ``_gen`` and schedules
``_fire(gen)``; a firing whose ``gen`` is no longer current is ignored. A core that moves its deadline
after every datagram therefore costs one heap entry per move and nothing else: no handle to keep,
no cancellation set to search.

States: *alive* from ``Network.add_host`` until ``Network.remove_host`` (a crash), then *gone*: its
pending timer is stale by generation, datagrams still in flight to it find no listener, and
``poke`` raises. Inside a settle the host is *busy*; a ``poke`` then (from ``after_activity``) does
nothing, because the settle under way is about to flush anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..events import Endpoint
from .model import Counters
from .scheduler import Scheduler
from .seams import DatagramCore, NatBox

if TYPE_CHECKING:
    from .lan import Lan

logger = logging.getLogger(__name__)

SendFunction = Callable[["SimHost", bytes, Endpoint, int, float], None]
"""The network's entry point for a datagram a host sends: (host, payload, destination, ttl, now)."""


class SimHost:
    """A host of the simulated network; made by ``Network.add_host``, never directly."""

    __slots__ = (
        "_busy",
        "_gen",
        "_scheduler",
        "_send",
        "_timer_at",
        "after_activity",
        "alive",
        "core",
        "counters",
        "duplicate",
        "endpoint",
        "ip",
        "lan",
        "loss",
        "nat",
        "port",
        "trace_tag",
        "x",
        "y",
    )

    def __init__(
        self,
        ip: str,
        port: int,
        core: DatagramCore,
        scheduler: Scheduler,
        send: SendFunction,
        *,
        nat: NatBox | None,
        lan: Lan | None,
        x: float,
        y: float,
        after_activity: Callable[[SimHost], None] | None,
    ) -> None:
        self.ip = ip
        self.port = port
        self.endpoint: Endpoint = (ip, port)
        self.core = core
        self.nat = nat
        """The NAT box this host sits behind, or None for a host on the internet."""
        self.lan = lan
        """The host's LAN (its NAT's, or a labelled public LAN), or None."""
        self.after_activity = after_activity
        """Called with the host after every call into the core, before the host sends and re-arms;
        the harness drains the core's events here. It may call the core (what it queues is sent by
        the settle under way) and may remove the host."""
        self.counters = Counters()
        self.loss = 0.0
        """Loss probability of this host's access link, each way; set with :meth:`impair`."""
        self.duplicate = 0.0
        """Duplication probability of what this host sends; set with :meth:`impair`."""
        self.alive = True
        self.x = x
        self.y = y
        self.trace_tag = f"{ip}:{port}"
        """How the trace names this host (precomputed: the trace is written for every delivery)."""
        self._scheduler = scheduler
        self._send = send
        self._timer_at: float | None = None
        self._gen = 0
        self._busy = False

    def impair(self, *, loss: float | None = None, duplicate: float | None = None) -> None:
        """Make this host's access link lossy (each way) or duplicating (what it sends)."""
        if loss is not None:
            self.loss = _probability("loss", loss)
        if duplicate is not None:
            self.duplicate = _probability("duplicate", duplicate)

    @property
    def timer(self) -> float | None:
        """The deadline the host has armed for its core, or None."""
        return self._timer_at

    def poke(self) -> None:
        """Flush after the owner called the core directly (e.g. the application asked the node to
        send): run ``after_activity``, send what the core queued, re-arm its timer."""
        if not self.alive:
            raise RuntimeError(f"host {self.trace_tag} was removed from the network")
        if not self._busy:
            self._settle(self._scheduler.now)

    def _fire(self, gen: int) -> None:
        """The core's deadline arrived, unless the timer was re-armed or the host crashed since."""
        if gen != self._gen:
            return
        self._timer_at = None
        now = self._scheduler.now
        self.core.handle_timer(now)
        self._settle(now)
        again = self.timer
        if again is not None and again <= now:
            raise RuntimeError(
                f"the core of {self.trace_tag} asked to be woken at {again!r} right after"
                f" handling its timer at {now!r}; it would spin for ever"
            )

    def _settle(self, now: float) -> None:
        self._busy = True
        try:
            if self.after_activity is not None:
                self.after_activity(self)
                if not self.alive:
                    return
            core = self.core
            out = core.datagrams_to_send(now)
            if out:
                send = self._send
                for payload, dest, ttl in out:
                    send(self, payload, dest, ttl, now)
            deadline = core.get_timer()
            if deadline != self._timer_at:
                self._timer_at = deadline
                self._gen += 1
                if deadline is not None:
                    self._scheduler.call_at(deadline if deadline > now else now, self._fire, self._gen)
        finally:
            self._busy = False

    def _detach(self) -> None:
        """The host crashed: its pending timer goes stale and it never runs again."""
        self.alive = False
        self._gen += 1
        self._timer_at = None

    def __repr__(self) -> str:
        where = f" behind {self.nat.public_ip}" if self.nat is not None else ""
        state = "" if self.alive else " gone"
        return f"SimHost({self.trace_tag}{where}{state})"


def _probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], not {value!r}")
    return float(value)
