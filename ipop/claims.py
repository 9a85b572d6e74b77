"""Pure. The addresses this node holds for its machine, claimed in the DHT, and DHCP allocation.

Theory of operation
-------------------
A virtual address belongs to whoever *created* ``dhcp:<ns>:<ip>`` in the DHT first (the DHT's create
is atomic: one owner at a time). This node claims an address for one of two reasons: its DHCP server
is about to give it to a client (``kind="dhcp"``), or the machine sent a frame from an address the node
does not hold yet, because it was configured statically (``kind="static"``). Each claim is in one of
these states, and moves only as listed:

    CLAIMING  --Created-->        HELD       the node may send from it and receives for it
    CLAIMING  --AlreadyOwned-->   CONFLICT   another node holds it: frames from it are dropped, the
                                             conflict is logged and shown in status
    CLAIMING  --failed-->         (gone)     no quorum: the next frame or DHCP retry tries again
    CONFLICT  --retry_at-->       CLAIMING   in case the other holder let it go
    HELD      --release-->        (gone)     DHCPRELEASE, lease expiry, decline: the record is deleted

A held record is refreshed by the DHT itself (``refresh=True``) with a TTL of the lease time, so when
this node stops for good, its addresses free up one lease time after their last refresh.

DHCP allocation (:meth:`Claims.allocate`) tries candidates in order: the client's wish, the address it
had before (kept in the state directory), then addresses derived from a hash of the client's key — the
same sequence on every node, so a client usually gets the same address even without any history. A
candidate that is ours already for that client is granted at once; one held here for another client, or
known to be taken, is skipped; the others are claimed, and the first Created is granted.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from dht import AlreadyOwned, Created, OpResult
from overlay import address_from_public_key, short

from .vnevents import OP_CREATE, OP_DELETE, DhtOps
from .vnwire import MAX_CLIENT_KEY, AddressClaim, address_key

log = logging.getLogger(__name__)

ALLOCATION_ATTEMPTS = 8
"""Candidates one DHCP allocation tries before it fails (the client retries the whole exchange). In a
subnet whose addresses are half taken, eight random candidates all miss with a chance of 1 in 256."""

CONFLICT_RETRY_S = 30.0
"""How often a conflicting claim is tried again: soon enough that an address freed by its holder is
taken up within a minute, rare enough to cost the DHT nothing."""

TAKEN_MEMORY_S = 300.0
"""How long an address found taken (or declined by a client) is skipped by allocation."""


class ClaimState(Enum):
    CLAIMING = "claiming"
    HELD = "held"
    CONFLICT = "conflict"


Done = Callable[[bool, float], None]
"""Told whether a claim ended HELD."""
Grant = Callable[[IPv4Address | None, float], None]
"""Told the address allocated, or None."""


@dataclass(slots=True)
class Claim:
    ip: IPv4Address
    client: bytes
    """The DHCP client key, or empty for a static address."""
    kind: str
    state: ClaimState
    since: float
    owner: bytes = b""
    """The other holder's public key (CONFLICT)."""
    retry_at: float = 0.0
    done: list[Done] = field(default_factory=list)


class Claims:
    def __init__(
        self,
        namespace: str,
        subnet: IPv4Network,
        reserved: frozenset[IPv4Address],
        ttl_s: int,
        dht: DhtOps,
        history: dict[bytes, IPv4Address] | None = None,
    ) -> None:
        """``reserved``: addresses no machine may have (the node's own DNS/DHCP address). ``history``:
        the address each client had last, from the state directory."""
        self.namespace = namespace
        self.subnet = subnet
        self.reserved = reserved
        self.ttl_s = ttl_s
        self.dht = dht
        self.claims: dict[IPv4Address, Claim] = {}
        self.held: set[bytes] = set()
        """The raw 4 bytes of every HELD address: the data plane's check that a source is ours."""
        self.history: dict[bytes, IPv4Address] = dict(history or {})
        self.taken: dict[IPv4Address, float] = {}
        self.allocating: set[bytes] = set()
        self.conflicts_logged = 0
        self.changed = False
        """Set when ``history`` changed; the shell saves it and clears the flag."""

    # -- claims ------------------------------------------------------------------------------------

    def claim(self, ip: IPv4Address, client: bytes, kind: str, now: float, done: Done | None = None) -> None:
        """Claim ``ip`` for ``client`` (empty: static). ``done`` hears whether it ended HELD."""
        if ip in self.reserved or ip not in self.subnet:
            raise ValueError(f"{ip} is not an address a machine of {self.subnet} may hold")
        claim = self.claims.get(ip)
        if claim is not None and claim.client != client:
            if done is not None:
                done(False, now)
            return
        if claim is not None and claim.state is not ClaimState.CONFLICT:
            if claim.state is ClaimState.HELD:
                if done is not None:
                    done(True, now)
            elif done is not None:
                claim.done.append(done)
            return
        if claim is None:
            claim = self.claims[ip] = Claim(ip, client, kind, ClaimState.CLAIMING, now)
            log.info("claiming %s (%s)", ip, kind if not client else f"DHCP client {client.hex()}")
        claim.state = ClaimState.CLAIMING
        if done is not None:
            claim.done.append(done)
        value = AddressClaim(stored_client(client)).encode()
        self.dht.start(
            OP_CREATE,
            address_key(self.namespace, ip),
            lambda result, at: self._claimed(ip, client, result, at),
            value=value,
            ttl=self.ttl_s,
        )

    def _claimed(self, ip: IPv4Address, client: bytes, result: OpResult, now: float) -> None:
        claim = self.claims.get(ip)
        if claim is None or claim.client != client or claim.state is not ClaimState.CLAIMING:
            if isinstance(result, Created):  # released meanwhile: give the record up again
                self._delete(ip, client)
            return
        done, claim.done = claim.done, []
        if isinstance(result, Created):
            claim.state, claim.since = ClaimState.HELD, now
            self.held.add(ip.packed)
            self.taken.pop(ip, None)
            log.info("holding %s", ip)
            ok = True
        elif isinstance(result, AlreadyOwned):
            claim.state, claim.owner = ClaimState.CONFLICT, result.owner
            claim.retry_at = now + CONFLICT_RETRY_S
            self.taken[ip] = now + TAKEN_MEMORY_S
            self.conflicts_logged += 1
            holder = short(address_from_public_key(result.owner)) if len(result.owner) == 32 else "?"
            if claim.kind == "static":
                log.warning(
                    "address conflict: %s is held by node %s; frames from this machine's %s are dropped",
                    ip,
                    holder,
                    ip,
                )
            else:
                log.info("%s is held by node %s; trying another address", ip, holder)
                del self.claims[ip]
            ok = False
        else:
            log.info("claim of %s failed: %s", ip, result)
            del self.claims[ip]
            ok = False
        for then in done:
            then(ok, now)

    def release(self, ip: IPv4Address, why: str) -> None:
        """Give ``ip`` up (the client released it, its lease expired, or it was declined)."""
        claim = self.claims.pop(ip, None)
        if claim is None:
            return
        self.held.discard(ip.packed)
        log.info("releasing %s (%s)", ip, why)
        if claim.state is ClaimState.HELD:
            self._delete(ip, claim.client)
        # A claim still in flight is deleted when its Created arrives (see _claimed).

    def _delete(self, ip: IPv4Address, client: bytes) -> None:
        self.dht.start(
            OP_DELETE,
            address_key(self.namespace, ip),
            lambda result, at: None,
            value=AddressClaim(stored_client(client)).encode(),
        )

    def mark_taken(self, ip: IPv4Address, now: float) -> None:
        self.taken[ip] = now + TAKEN_MEMORY_S

    def state_of(self, ip: IPv4Address) -> ClaimState | None:
        claim = self.claims.get(ip)
        return None if claim is None else claim.state

    # -- DHCP allocation ----------------------------------------------------------------------------

    def allocate(self, client: bytes, wish: IPv4Address | None, now: float, grant: Grant) -> None:
        """Find and claim an address for ``client``; ``grant`` hears which (or None)."""
        if client in self.allocating:
            return  # the allocation under way answers the DHCP server; a second would race it
        self.allocating.add(client)
        candidates = self._candidates(client, wish, now)

        def attempt(tries: int, at: float) -> None:
            for ip in candidates:
                claim = self.claims.get(ip)
                if claim is not None and claim.client != client:
                    continue
                if claim is None and self.taken.get(ip, 0.0) > at:
                    continue
                if tries >= ALLOCATION_ATTEMPTS:
                    break

                def claimed(ok: bool, when: float, ip: IPv4Address = ip) -> None:
                    if ok:
                        self._granted(client, ip, when, grant)
                    else:
                        attempt(tries + 1, when)

                self.claim(ip, client, "dhcp", at, claimed)
                return
            self.allocating.discard(client)
            log.warning("no address for DHCP client %s after %d attempts", client.hex(), tries)
            grant(None, at)

        attempt(0, now)

    def _granted(self, client: bytes, ip: IPv4Address, now: float, grant: Grant) -> None:
        self.allocating.discard(client)
        if self.history.get(client) != ip:
            self.history[client] = ip
            self.changed = True
        grant(ip, now)

    def _candidates(self, client: bytes, wish: IPv4Address | None, now: float) -> Iterator[IPv4Address]:
        seen: set[IPv4Address] = set()
        for ip in (wish, self.history.get(client)):
            if ip is not None and self.assignable(ip) and ip not in seen:
                seen.add(ip)
                yield ip
        for ip in hashed_candidates(client, self.subnet, self.reserved):
            if ip not in seen:
                seen.add(ip)
                yield ip

    def assignable(self, ip: IPv4Address) -> bool:
        s = self.subnet
        return ip in s and ip not in self.reserved and ip not in (s.network_address, s.broadcast_address)

    # -- time --------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Retry conflicting claims whose time has come; forget old "taken" marks."""
        for claim in list(self.claims.values()):
            if claim.state is ClaimState.CONFLICT and now >= claim.retry_at:
                self.claim(claim.ip, claim.client, claim.kind, now)
        for ip in [ip for ip, until in self.taken.items() if until <= now]:
            del self.taken[ip]

    def next_deadline(self) -> float | None:
        times = [c.retry_at for c in self.claims.values() if c.state is ClaimState.CONFLICT]
        times += self.taken.values()
        return min(times, default=None)

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for claim in sorted(self.claims.values(), key=lambda c: c.ip):
            row: dict[str, Any] = {
                "ip": str(claim.ip),
                "kind": claim.kind,
                "state": claim.state.value,
                "client": claim.client.hex() or None,
            }
            if claim.state is ClaimState.CONFLICT and len(claim.owner) == 32:
                row["held_by"] = short(address_from_public_key(claim.owner))
            rows.append(row)
        return rows


def stored_client(client: bytes) -> bytes:
    """The client key as the DHT record holds it: as it is, or a 16-byte hash of an unusually long
    one (option 61 may have 255 bytes; a record value must stay small)."""
    if len(client) <= MAX_CLIENT_KEY:
        return client
    return hashlib.blake2b(client, digest_size=16, person=b"ipop-client").digest()


def hashed_candidates(
    client: bytes, subnet: IPv4Network, reserved: frozenset[IPv4Address]
) -> Iterator[IPv4Address]:
    """Host addresses of ``subnet`` drawn from a hash of ``client``: the same sequence on every node,
    spread evenly, never the network, broadcast or a reserved address."""
    base = int(subnet.network_address)
    hosts = subnet.num_addresses - 2
    for attempt in range(4 * ALLOCATION_ATTEMPTS):
        digest = hashlib.blake2b(client + attempt.to_bytes(2, "big"), digest_size=8, person=b"ipop-dhcp")
        ip = IPv4Address(base + 1 + int.from_bytes(digest.digest(), "big") % hosts)
        if ip not in reserved:
            yield ip
