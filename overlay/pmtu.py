"""Pure. Path MTU discovery for one overlay link: the largest UDP payload that reaches the peer whole,
found with probes sent with DF set (packetization-layer PMTUD, RFC 8899's "datagram PLPMTUD").

Theory of operation. The underlay must never fragment (fragments are dropped by many NATs and
firewalls), so a link may only send datagrams it knows arrive. It starts at ``base`` (1252 bytes of
UDP payload: a 1280-byte IPv6 packet, which every IPv6 path carries and nearly every IPv4 one) and
asks the peer whether bigger ones arrive: the link layer sends each size that :meth:`PathMtu.probes`
returns as a padded datagram with DF set, and the peer acknowledges it; an acknowledgement
(:meth:`PathMtu.probe_acked`) confirms that size. Probes of several sizes go out together in one
round - the plateaus of common link MTUs (1280 ... 1500, 9000, 65535) above what is confirmed, and
the midpoint of the remaining gap - so a path is measured in one or two round trips instead of one
binary-search step per round trip. A probe unanswered after ``probe_timeout_s`` is sent again; one
unanswered ``max_probes`` times proves its size too big and lowers the upper bound. When no size is
left to try, the search is complete; ``raise_interval_s`` later it starts again upwards, since paths
change.

A smaller path shows itself in three ways, and each is an input: the local kernel refuses a probe
bigger than the outgoing interface (EMSGSIZE) or an ICMP "packet too big" names a size
(:meth:`packet_too_big`); data of the confirmed size stops arriving (:meth:`black_hole`, called by
the link layer when full-size datagrams go unanswered while small ones do); or the peer's endpoint
changes (:meth:`endpoint_changed`), which makes everything known about the old path worthless.

States and transitions (the whole machine; :data:`TRANSITIONS` is the same table as data)::

    BASE      --base acked------------------> SEARCHING
    BASE      --base lost max_probes times--> ERROR       (mtu = min_size: a link that works badly)
    ERROR     --base acked------------------> SEARCHING
    SEARCHING --nothing left to try---------> COMPLETE
    COMPLETE  --raise_interval_s passed-----> SEARCHING   (upper bound back to max_size)
    SEARCHING, COMPLETE --packet_too_big----> SEARCHING   (upper bound and confirmed size drop)
    BASE, ERROR --packet_too_big------------> unchanged   (the base probe shrinks to the bound)
    any       --black_hole------------------> BASE        (back to base, search again)
    any       --endpoint_changed------------> BASE

Sizes are UDP payload bytes (what the overlay may put in one datagram), from :attr:`PathMtu.mtu`.
Time is the ``now`` parameter; :meth:`get_timer` and :meth:`handle_timer` drive the timeouts, as in
every core here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

log = logging.getLogger(__name__)

IPV4_UDP_OVERHEAD = 28
"""IPv4 header (20) and UDP header (8): a link MTU of M carries M - 28 bytes of UDP payload."""
IPV6_UDP_OVERHEAD = 48
"""IPv6 header (40) and UDP header (8)."""

LINK_MTU_PLATEAUS = (1280, 1400, 1420, 1450, 1472, 1480, 1492, 1500, 4000, 9000, 16384, 65535)
"""Link MTUs worth trying first: IPv6's minimum, common tunnel and PPPoE MTUs (1400-1492), Ethernet,
jumbo frames (9000), and loopback/veth-sized links (65535). Most paths end on one of these."""


class PmtuState(Enum):
    BASE = "base"
    SEARCHING = "searching"
    COMPLETE = "complete"
    ERROR = "error"


class _Event(Enum):
    BASE_ACKED = "base_acked"
    BASE_LOST = "base_lost"
    EXHAUSTED = "exhausted"
    RAISE = "raise"
    SHRINK = "shrink"
    BLACK_HOLE = "black_hole"
    ENDPOINT = "endpoint"


_B, _S, _C, _E = PmtuState.BASE, PmtuState.SEARCHING, PmtuState.COMPLETE, PmtuState.ERROR
TRANSITIONS: dict[tuple[PmtuState, _Event], PmtuState] = {
    (_B, _Event.BASE_ACKED): _S,
    (_B, _Event.BASE_LOST): _E,
    (_E, _Event.BASE_ACKED): _S,
    (_S, _Event.EXHAUSTED): _C,
    (_C, _Event.RAISE): _S,
    **{(s, _Event.SHRINK): _S for s in (_S, _C)},
    **{(s, _Event.SHRINK): s for s in (_B, _E)},
    **{(s, _Event.BLACK_HOLE): _B for s in PmtuState},
    **{(s, _Event.ENDPOINT): _B for s in PmtuState},
}


@dataclass(frozen=True, slots=True)
class PmtuConfig:
    base: int = 1280 - IPV6_UDP_OVERHEAD
    """UDP payload assumed to work before anything is confirmed: 1232, what a 1280-byte IPv6 packet
    carries (1280 - 48), which also fits every IPv4 path of 1260 bytes or more."""

    min_size: int = 548
    """The fallback when even ``base`` is not confirmed: 576 (the smallest IPv4 datagram every host
    must accept) minus 28. Slow but not broken."""

    max_size: int = 65535 - IPV4_UDP_OVERHEAD
    """Upper bound of the search: 65507, the largest UDP payload of IPv4."""

    overhead: int = IPV4_UDP_OVERHEAD
    """IP and UDP headers, to turn link MTUs (the plateaus, ICMP reports) into payload sizes; 48 over
    IPv6."""

    probe_timeout_s: float = 1.0
    """A probe unanswered this long is sent again: well above any round trip an overlay link keeps."""

    max_probes: int = 3
    """Probes of one size that must all go unanswered before the size counts as too big (RFC 8899's
    MAX_PROBES); one or two lost probes on a lossy path do not shrink it."""

    raise_interval_s: float = 600.0
    """After a complete search, probe upwards again this long later (RFC 8899's PMTU_RAISE_TIMER)."""

    min_step: int = 16
    """The search stops refining once the gap between confirmed and too big is this small."""

    max_parallel: int = 16
    """Sizes probed at once in one round, the largest first. 16 covers every plateau and the midpoint,
    so that a path on a plateau is found in one round trip; the burst (~110 KB when every size is
    tried) happens once per search, and the local kernel refuses the sizes above the interface's
    MTU without sending them."""

    def __post_init__(self) -> None:
        if not 0 < self.min_size <= self.base <= self.max_size:
            raise ValueError("PmtuConfig needs 0 < min_size <= base <= max_size")
        if self.max_probes < 1 or self.max_parallel < 1 or self.probe_timeout_s <= 0:
            raise ValueError("PmtuConfig needs max_probes, max_parallel and probe_timeout_s > 0")


class PathMtu:
    """The path MTU state of one link. ``mtu`` is the largest UDP payload the link may send now."""

    __slots__ = ("_config", "_high", "_outstanding", "_raise_at", "_tries", "mtu", "state")

    def __init__(self, config: PmtuConfig | None = None) -> None:
        self._config = config or PmtuConfig()
        self.state = PmtuState.BASE
        self.mtu = self._config.base
        """Confirmed (or, in BASE, assumed) largest UDP payload."""
        self._high = self._config.max_size
        self._tries: dict[int, int] = {}
        """Probes sent per size in flight."""
        self._outstanding: dict[int, float] = {}
        """Size -> deadline of its latest probe."""
        self._raise_at: float | None = None

    def __repr__(self) -> str:
        return f"<PathMtu {self.state.value} mtu={self.mtu} high={self._high}>"

    @property
    def high(self) -> int:
        """The smallest size known (or presumed) too big, minus one."""
        return self._high

    def _advance(self, event: _Event) -> None:
        old = self.state
        self.state = TRANSITIONS[old, event]
        if self.state is not old:
            log.info(
                "path MTU %s -> %s (mtu %d, upper bound %d)",
                old.value,
                self.state.value,
                self.mtu,
                self._high,
            )

    # -- what to send -----------------------------------------------------------------------------------

    def _candidates(self) -> list[int]:
        cfg, low, high = self._config, self.mtu, self._high
        if self.state in (_B, _E):
            return [min(cfg.base, high)]
        if self.state is not _S:
            return []
        sizes = {p - cfg.overhead for p in LINK_MTU_PLATEAUS}
        sizes.add(cfg.max_size)
        found = {s for s in sizes if low < s <= high}
        if high - low > cfg.min_step:
            found.add((low + high + 1) // 2)
        return sorted(found, reverse=True)[: cfg.max_parallel]

    def probes(self, now: float) -> list[int]:
        """Sizes to probe now (largest first); each is then in flight until acked or timed out. The
        caller sends each as one padded datagram with DF set, and calls :meth:`probe_acked` when the
        peer confirms it."""
        if self.state is _E and self._raise_at is not None:
            if now < self._raise_at:
                return []
            self._raise_at = None
        due: list[int] = []
        for size in self._candidates():
            deadline = self._outstanding.get(size)
            if deadline is not None and deadline > now:
                continue
            if deadline is None:
                self._tries.setdefault(size, 0)
            self._tries[size] += 1
            self._outstanding[size] = now + self._config.probe_timeout_s
            due.append(size)
        return due

    # -- what comes back -------------------------------------------------------------------------------

    def probe_acked(self, size: int, now: float) -> None:
        """The peer received a probe of ``size`` bytes: sizes up to it work."""
        self._outstanding.pop(size, None)
        self._tries.pop(size, None)
        if self.state in (_B, _E):
            if size >= min(self._config.base, self._high):
                self.mtu = size
                if size > self._high:
                    self._high = self._config.max_size
                self._advance(_Event.BASE_ACKED)
                self._drop_settled()
                self._check_exhausted(now)
            return
        if size > self.mtu:
            if size > self._high:  # an ack beats a presumption: the "too big" verdict was loss
                self._high = self._config.max_size
            self.mtu = size
            self._drop_settled()
            self._check_exhausted(now)

    def packet_too_big(self, size: int, now: float) -> None:
        """A datagram of ``size`` bytes of payload is the most the path takes: from EMSGSIZE (the
        local interface's MTU) or an ICMP report (its MTU minus the headers)."""
        size = max(size, self._config.min_size)
        if size >= self._high:
            return
        self._high = size
        self.mtu = min(self.mtu, size)
        self._drop_settled()
        self._advance(_Event.SHRINK)
        self._check_exhausted(now)

    def black_hole(self, now: float) -> None:
        """Datagrams of the confirmed size stopped arriving while small ones still do: the path
        shrank without telling. Fall back to ``base`` and search again."""
        log.info("path MTU: datagrams of %d bytes vanish; back to %d", self.mtu, self._config.base)
        self._reset(_Event.BLACK_HOLE)

    def endpoint_changed(self, now: float) -> None:
        """The peer is reached at a new address: a new path, nothing known about it."""
        self._reset(_Event.ENDPOINT)

    def _reset(self, event: _Event) -> None:
        self._advance(event)
        self.mtu = self._config.base
        self._high = self._config.max_size
        self._outstanding.clear()
        self._tries.clear()
        self._raise_at = None

    def _drop_settled(self) -> None:
        if self.state in (_B, _E):
            return  # the base probe is at (or below) the assumed size: not settled until acked
        for size in [s for s in self._outstanding if s <= self.mtu or s > self._high]:
            del self._outstanding[size]
            self._tries.pop(size, None)

    def _check_exhausted(self, now: float) -> None:
        if self.state is _S and not self._candidates():
            self._advance(_Event.EXHAUSTED)
            self._raise_at = now + self._config.raise_interval_s

    # -- timers ----------------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next (None: nothing pending)."""
        times = list(self._outstanding.values())
        if self._raise_at is not None:
            times.append(self._raise_at)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Time out unanswered probes and start a raise search when it is due. New probes are then
        due: call :meth:`probes`."""
        if self._raise_at is not None and now >= self._raise_at and self.state is _C:
            self._raise_at = None
            self._high = self._config.max_size
            self._advance(_Event.RAISE)
        wanted = set(self._candidates())
        for size, deadline in sorted(self._outstanding.items()):
            if deadline > now:
                continue
            if self._tries.get(size, 0) < self._config.max_probes:
                if size not in wanted:  # a midpoint the search has moved past: forget it
                    del self._outstanding[size]
                    self._tries.pop(size, None)
                continue  # sent again by the next call of probes()
            del self._outstanding[size]
            self._tries.pop(size, None)
            if self.state in (_B, _E):
                if self.state is _B:
                    self.mtu = min(self._config.min_size, self.mtu)
                    self._advance(_Event.BASE_LOST)
                # ERROR: try the base again after as long as the failed attempt took.
                self._raise_at = now + self._config.probe_timeout_s * self._config.max_probes
                continue
            self._high = min(self._high, size - 1)
        self._drop_settled()
        self._check_exhausted(now)
