"""Pure. Member names: the ones this node registers in the DHT, and the ones it looks up for DNS.

Theory of operation
-------------------
A member is reachable as ``NAME.<domain>`` when some node has *created* ``dns:<ns>:<name>`` with the
member's address. This node registers its own ``[node] name`` and the host name its DHCP client sent,
both for the address its machine holds. Create is first-owner-wins, so a name already taken by another
node stays with it: the clash is logged and shown in ``ipop status``, and tried again now and then (the
other node may leave). Each registration moves only as listed:

    CLAIMING --Created--> HELD          the DHT refreshes it while this node lives
    CLAIMING --AlreadyOwned--> CLASH    --retry_at--> CLAIMING
    CLAIMING --failed--> CLAIMING later (no quorum: the overlay is still forming)
    HELD | CLASH --unregister--> gone  (the address was released; a HELD record is deleted)

Lookups of other members' names are cached (:class:`NameCache`), positive answers for the DNS
responder's member TTL and negative ones briefly, so a repeated query is answered without the DHT.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Address
from typing import Any

from dht import AlreadyOwned, Created, OpResult
from overlay import address_from_public_key, short

from .vnevents import OP_CREATE, OP_DELETE, DhtOps
from .vnwire import NameRecord, name_key

log = logging.getLogger(__name__)

CLASH_RETRY_S = 60.0
"""How often a clashing name is tried again: the other holder's record outlives it by at most one
lease time, so a minute is prompt without costing anything."""

FAILED_RETRY_S = 5.0
"""A registration that found no quorum (the overlay is still forming) is tried again this soon."""


class NameState(Enum):
    CLAIMING = "claiming"
    HELD = "held"
    CLASH = "clash"


@dataclass(slots=True)
class Registration:
    name: str
    ip: IPv4Address
    source: str
    """``node`` ([node] name) or ``dhcp`` (the DHCP client's host name)."""
    state: NameState
    owner: bytes = b""
    retry_at: float = 0.0
    attempt: int = 0


class Names:
    def __init__(self, namespace: str, ttl_s: int, dht: DhtOps) -> None:
        self.namespace = namespace
        self.ttl_s = ttl_s
        self.dht = dht
        self.registrations: dict[str, Registration] = {}

    def register(self, name: str, ip: IPv4Address, source: str, now: float) -> None:
        """Make ``name`` point at ``ip`` (again, if it pointed elsewhere)."""
        reg = self.registrations.get(name)
        if reg is not None and reg.ip == ip and reg.state is not NameState.CLASH:
            return
        if reg is None or reg.ip != ip:
            reg = self.registrations[name] = Registration(name, ip, source, NameState.CLAIMING)
            log.info("registering name %s for %s", name, ip)
        self._create(reg, now)

    def _create(self, reg: Registration, now: float) -> None:
        reg.state = NameState.CLAIMING
        reg.attempt += 1
        attempt = reg.attempt
        self.dht.start(
            OP_CREATE,
            name_key(self.namespace, reg.name),
            lambda result, at: self._created(reg.name, attempt, result, at),
            value=NameRecord(reg.ip).encode(),
            ttl=self.ttl_s,
        )

    def _created(self, name: str, attempt: int, result: OpResult, now: float) -> None:
        reg = self.registrations.get(name)
        if reg is None or reg.attempt != attempt:
            if isinstance(result, Created):  # unregistered or re-pointed meanwhile
                self._delete(name, result.value)
            return
        if isinstance(result, Created):
            reg.state = NameState.HELD
            log.info("name %s is %s", name, reg.ip)
        elif isinstance(result, AlreadyOwned):
            reg.state, reg.owner, reg.retry_at = NameState.CLASH, result.owner, now + CLASH_RETRY_S
            holder = short(address_from_public_key(result.owner)) if len(result.owner) == 32 else "?"
            log.warning("name clash: %s is registered by node %s; this node keeps trying", name, holder)
        else:
            reg.retry_at = now + FAILED_RETRY_S
            log.info("registering name %s failed (%s); retrying", name, result)

    def unregister_ip(self, ip: IPv4Address) -> None:
        """Forget every name that points at ``ip`` (deleting the records this node holds)."""
        for reg in [r for r in self.registrations.values() if r.ip == ip]:
            del self.registrations[reg.name]
            if reg.state is NameState.HELD:
                self._delete(reg.name, NameRecord(reg.ip).encode())

    def _delete(self, name: str, value: bytes) -> None:
        self.dht.start(OP_DELETE, name_key(self.namespace, name), lambda result, at: None, value=value)

    def local(self, name: str) -> IPv4Address | None:
        """The address of a name this node holds, answered without the DHT."""
        reg = self.registrations.get(name)
        return reg.ip if reg is not None and reg.state is NameState.HELD else None

    def tick(self, now: float) -> None:
        for reg in list(self.registrations.values()):
            if reg.state is not NameState.HELD and reg.retry_at and now >= reg.retry_at:
                reg.retry_at = 0.0
                self._create(reg, now)

    def next_deadline(self) -> float | None:
        times = [r.retry_at for r in self.registrations.values() if r.retry_at]
        return min(times, default=None)

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for reg in sorted(self.registrations.values(), key=lambda r: r.name):
            row: dict[str, Any] = {"name": reg.name, "ip": str(reg.ip), "source": reg.source}
            row["state"] = reg.state.value
            if reg.state is NameState.CLASH and len(reg.owner) == 32:
                row["held_by"] = short(address_from_public_key(reg.owner))
            rows.append(row)
        return rows


class NameCache:
    """Looked-up member names: name -> (address or None, expiry)."""

    def __init__(self, positive_ttl_s: float, negative_ttl_s: float, max_entries: int) -> None:
        self.positive_ttl_s = positive_ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.max_entries = max_entries
        self.entries: dict[str, tuple[IPv4Address | None, float]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, name: str, now: float) -> tuple[bool, IPv4Address | None]:
        """(known, address): ``known`` False means the DHT must be asked."""
        entry = self.entries.get(name)
        if entry is None or entry[1] <= now:
            self.entries.pop(name, None)
            self.misses += 1
            return False, None
        self.hits += 1
        return True, entry[0]

    def put(self, name: str, ip: IPv4Address | None, now: float) -> None:
        if len(self.entries) >= self.max_entries:
            self.expire(now)
            if len(self.entries) >= self.max_entries:
                self.entries.pop(min(self.entries, key=lambda n: self.entries[n][1]))
        ttl = self.positive_ttl_s if ip is not None else self.negative_ttl_s
        self.entries[name] = (ip, now + ttl)

    def forget(self, name: str) -> None:
        self.entries.pop(name, None)

    def expire(self, now: float) -> None:
        for name in [n for n, (_, until) in self.entries.items() if until <= now]:
            del self.entries[name]
