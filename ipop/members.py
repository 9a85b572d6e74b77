"""Pure. The members of the namespace, who receive its broadcasts and multicasts.

Every node of a namespace *puts* one value under ``bcast:<ns>`` (the DHT keeps one value per owner and
refreshes it while the node lives), and reads the whole list back every :data:`REFRESH_S` seconds. The
owner of each value is the member: its overlay address is the hash of the key that signed the value,
so a node can add only itself. A member that has just joined reads the list at once and says hello to
everyone on it (:class:`ipop.vnwire.Hello`), so it receives their broadcasts without waiting for their
next read. States:

    idle --announce--> announcing --Stored--> announced (list read at once, then every REFRESH_S)
    announcing --failed--> idle, tried again after RETRY_S
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dht import OpResult, Stored, Values
from overlay import Address, address_from_public_key

from .vnevents import OP_GET, OP_PUT, DhtOps
from .vnwire import MEMBER_VALUE, is_member_value, members_key

log = logging.getLogger(__name__)

MEMBERS_TTL_S = 300
"""Lifetime of a membership value: a member that dies stops receiving broadcasts within five minutes
(until then its copies are sent to no one, which costs a datagram each)."""
REFRESH_S = 30.0
"""How often the member list is read: a new member receives broadcasts within half a minute."""
RETRY_S = 5.0
"""After a failed announcement or read (no quorum while the overlay forms), try again this soon."""


class Members:
    def __init__(
        self, namespace: str, address: Address, dht: DhtOps, hello: Callable[[Address], None]
    ) -> None:
        """``hello(member)`` tells another member that this node joined (after the first read)."""
        self.key = members_key(namespace)
        self.address = address
        self.dht = dht
        self.hello = hello
        self.greeted = False
        self.announced = False
        self.announcing = False
        self.reading = False
        self.addresses: tuple[Address, ...] = ()
        self.read_at: float | None = None
        self.next_at: float | None = None

    def announce(self, now: float) -> None:
        if self.announced or self.announcing:
            return
        self.announcing = True
        self.dht.start(OP_PUT, self.key, self._announced, value=MEMBER_VALUE, ttl=MEMBERS_TTL_S)

    def _announced(self, result: OpResult, now: float) -> None:
        self.announcing = False
        if isinstance(result, Stored):
            self.announced = True
            log.info("member of the namespace's broadcast group")
            self.read(now)
        else:
            log.info("announcing membership failed (%s); retrying", result)
            self.next_at = now + RETRY_S

    def read(self, now: float) -> None:
        if self.reading:
            return
        self.reading = True
        self.dht.start(OP_GET, self.key, self._read)

    def _read(self, result: OpResult, now: float) -> None:
        self.reading = False
        if not isinstance(result, Values):
            self.next_at = now + RETRY_S
            return
        found = set()
        for info in result.values:
            if is_member_value(info.value) and len(info.owner) == 32:
                found.add(address_from_public_key(info.owner))
        found.discard(self.address)
        if set(self.addresses) != found:
            log.info("%d other members in the namespace", len(found))
        self.addresses = tuple(sorted(found))
        self.read_at = now
        self.next_at = now + REFRESH_S
        if not self.greeted:
            self.greeted = True
            for member in self.addresses:
                self.hello(member)

    def greeted_by(self, address: Address) -> None:
        """A new member said hello: it receives broadcasts from now on (the next read confirms it)."""
        if address != self.address and address not in self.addresses:
            self.addresses = tuple(sorted((*self.addresses, address)))
            log.info("%d other members in the namespace", len(self.addresses))

    def others(self, now: float) -> tuple[Address, ...]:
        """The other members, as last read."""
        return self.addresses

    def unreachable(self, address: Address) -> None:
        if address in self.addresses:
            self.addresses = tuple(a for a in self.addresses if a != address)

    def tick(self, now: float, joined: bool) -> None:
        if not joined or self.next_at is None or now < self.next_at:
            return
        self.next_at = None
        if not self.announced:
            self.announce(now)
        else:
            self.read(now)

    def next_deadline(self, joined: bool) -> float | None:
        return self.next_at if joined else None

    def status(self, now: float) -> dict[str, Any]:
        return {
            "announced": self.announced,
            "others": len(self.addresses),
            "read_s_ago": None if self.read_at is None else round(now - self.read_at, 1),
        }
