"""Pure. The mapping cache: which overlay address holds a virtual IPv4 address, as the DHT said.

Theory of operation
-------------------
Every packet to a remote member needs the overlay address of the node that holds the destination,
and every packet from one needs the holder of its source (a node accepts a packet only from the node
that holds its source address: no spoofing inside the VPN). Both come from the same DHT record,
``dhcp:<ns>:<ip>``, so both use this one cache. An entry is in one of these states:

    (absent)    nothing known: the first packet starts a lookup and waits
    LOOKING     a DHT get is in flight; packets wait in a bounded queue (the newest are dropped)
    FOUND       the holder is known until ``expires_at``; after ``refresh_at`` the next use starts a
                lookup in the background while packets keep flowing to the known holder
    ABSENT      nobody holds the address, until ``expires_at`` (a short negative entry, because a
                machine that is getting its lease now will hold it in a moment)

Transitions, all in :meth:`MappingCache.resolved`, :meth:`want`, :meth:`forget` and :meth:`expire`:

    absent  --want-->      LOOKING   (the caller starts the DHT get)
    LOOKING --resolved-->  FOUND | ABSENT   (waiting packets are handed back to the caller)
    FOUND   --want after refresh_at--> FOUND with a lookup in flight --resolved--> FOUND | ABSENT
    FOUND | ABSENT --expire / forget--> absent

``forget`` is what a "no such mapping" answer or an undeliverable packet leads to: the next packet
looks the address up again. The fast path of the data plane reads :attr:`MappingCache.routes`, a plain
dict of the FOUND entries keyed by the four raw address bytes, and nothing else.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from overlay import Address

T = TypeVar("T")


class Entry(Enum):
    LOOKING = "looking"
    FOUND = "found"
    ABSENT = "absent"


@dataclass(slots=True)
class Mapping(Generic[T]):
    state: Entry
    holder: Address | None = None
    expires_at: float = 0.0
    refresh_at: float = 0.0
    looking: bool = False
    """A DHT get for this address is in flight (LOOKING, or a background refresh of FOUND)."""
    waiting: deque[T] = field(default_factory=deque)
    looked_up_at: float = 0.0


class MappingCache(Generic[T]):
    """Addresses (4 raw bytes) -> holders, with packets of type ``T`` waiting for lookups."""

    def __init__(
        self,
        positive_ttl_s: float,
        negative_ttl_s: float,
        max_waiting: int,
        max_entries: int,
    ) -> None:
        if positive_ttl_s <= 0 or negative_ttl_s <= 0 or max_waiting < 1 or max_entries < 1:
            raise ValueError("TTLs, queue length and size must be positive")
        self.positive_ttl_s = positive_ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.max_waiting = max_waiting
        self.max_entries = max_entries
        self.entries: dict[bytes, Mapping[T]] = {}
        self.routes: dict[bytes, Address] = {}
        """The FOUND entries: the data plane's one dictionary lookup per packet."""
        self.dropped_waiting = 0
        self.dropped_full = 0

    def want(self, ip: bytes, now: float) -> tuple[Mapping[T] | None, bool]:
        """The entry for ``ip`` and whether the caller must start a DHT get now. Creates a LOOKING
        entry when there is none; marks a FOUND entry past its refresh time as being looked up."""
        entry = self.entries.get(ip)
        if entry is not None and entry.state is not Entry.LOOKING and now >= entry.expires_at:
            self._remove(ip)
            entry = None
        if entry is None:
            if len(self.entries) >= self.max_entries and not self._evict(now):
                self.dropped_full += 1
                return None, False
            entry = self.entries[ip] = Mapping(Entry.LOOKING, looking=True, looked_up_at=now)
            return entry, True
        if entry.state is Entry.FOUND and not entry.looking and now >= entry.refresh_at:
            entry.looking = True
            entry.looked_up_at = now
            return entry, True
        return entry, False

    def wait(self, entry: Mapping[T], item: T) -> bool:
        """Queue ``item`` until the lookup ends; False (counted) when the queue is full."""
        if len(entry.waiting) >= self.max_waiting:
            self.dropped_waiting += 1
            return False
        entry.waiting.append(item)
        return True

    def resolved(self, ip: bytes, holder: Address | None, now: float) -> list[T]:
        """The DHT answered for ``ip``: ``holder`` or None (nobody). Returns the packets that waited."""
        entry = self.entries.get(ip)
        if entry is None:
            entry = self.entries[ip] = Mapping(Entry.ABSENT)
        entry.looking = False
        if holder is None:
            entry.state, entry.holder = Entry.ABSENT, None
            entry.expires_at = now + self.negative_ttl_s
            self.routes.pop(ip, None)
        else:
            entry.state, entry.holder = Entry.FOUND, holder
            entry.expires_at = now + self.positive_ttl_s
            entry.refresh_at = now + self.positive_ttl_s / 2
            self.routes[ip] = holder
        waiting = list(entry.waiting)
        entry.waiting.clear()
        return waiting

    def failed(self, ip: bytes) -> list[T]:
        """The lookup could not be done (no quorum): forget the entry so that the next packet tries
        again; the waiting packets are returned to be dropped. A FOUND entry keeps its holder."""
        entry = self.entries.get(ip)
        if entry is None:
            return []
        entry.looking = False
        waiting = list(entry.waiting)
        entry.waiting.clear()
        if entry.state is Entry.LOOKING:
            self._remove(ip)
        return waiting

    def holder(self, ip: bytes) -> Address | None:
        return self.routes.get(ip)

    def state(self, ip: bytes) -> Entry | None:
        entry = self.entries.get(ip)
        return None if entry is None else entry.state

    def forget(self, ip: bytes) -> bool:
        """Drop what is known of ``ip`` (not a lookup in flight). True if something was known."""
        entry = self.entries.get(ip)
        if entry is None or entry.state is Entry.LOOKING:
            return False
        if entry.looking:  # a refresh is in flight: keep the entry for its answer, stop routing
            entry.state, entry.holder = Entry.LOOKING, None
            self.routes.pop(ip, None)
            return True
        self._remove(ip)
        return True

    def forget_holder(self, holder: Address) -> list[bytes]:
        """Forget every address held by ``holder`` (it is unreachable). Returns the addresses."""
        gone = [ip for ip, h in self.routes.items() if h == holder]
        for ip in gone:
            self.forget(ip)
        return gone

    def expire(self, now: float) -> None:
        """Remove FOUND and ABSENT entries whose time is up (lookups in flight stay), and take FOUND
        entries past their refresh time off the fast path, so that their next packet refreshes them."""
        for ip, e in list(self.entries.items()):
            if e.looking or e.state is Entry.LOOKING:
                continue
            if now >= e.expires_at:
                self._remove(ip)
            elif e.state is Entry.FOUND and now >= e.refresh_at:
                self.routes.pop(ip, None)

    def next_expiry(self) -> float | None:
        times = [
            e.refresh_at if ip in self.routes else e.expires_at
            for ip, e in self.entries.items()
            if not e.looking and e.state is not Entry.LOOKING
        ]
        return min(times, default=None)

    def _remove(self, ip: bytes) -> None:
        self.entries.pop(ip, None)
        self.routes.pop(ip, None)

    def _evict(self, now: float) -> bool:
        """Make room: first whatever has expired, else the entry that expires soonest."""
        self.expire(now)
        if len(self.entries) < self.max_entries:
            return True
        settled = [(e.expires_at, ip) for ip, e in self.entries.items() if not e.looking]
        if not settled:
            return False
        self._remove(min(settled)[1])
        return True
