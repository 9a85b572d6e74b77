"""Pure. The DHT's configuration: one frozen dataclass, every field documented with why its default.

The ipop runtime fills it from the ``[dht]`` section of the TOML file; the simulator and the tests build
it directly. Limits here are also the limits the wire decoder enforces, so that a peer can never make
this node allocate more than they allow.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DhtConfig:
    replicas: int = 8
    """Ring positions per key (``key_address(key, i)``, i = 0..replicas-1). Brunet's DHT used 8 with a
    majority of 5: two quorums always share at least two positions, so racing creates need two
    positions to forget a reservation at once before both could win."""

    copies: int = 2
    """Besides the node closest to a position, its ``copies`` next-closest neighbours keep the
    position's records too, so an abrupt death (no goodbye) loses no position: the node that becomes
    closest already holds them. Two survives two neighbours dying within one repair interval."""

    max_key_bytes: int = 256
    """Longest key (issue 3). Keys are namespaced names such as ``ns:ip:10.250.0.7``."""

    max_value_bytes: int = 1024
    """Longest value (issue 3): a record must fit one overlay message with its signature."""

    max_values_per_key: int = 64
    """Live values one position keeps under a key (``put``). A namespace's broadcast group holds one
    value per member node; 64 covers the groups ipop expects while bounding what one key costs."""

    max_records: int = 20_000
    """Entries (values, reservations, tombstones) one node stores across all positions. About 30 MB at
    the largest records; a full store refuses new entries with ``store_full`` and never crashes."""

    min_ttl_s: int = 1
    """Shortest lifetime a record may ask for."""

    max_ttl_s: int = 86_400
    """Longest lifetime a record may ask for (one day). Owners refresh long before expiry, so a long
    TTL only matters when the owner dies; then its addresses free up within a day at the latest."""

    reserve_lease_s: int = 15
    """Lifetime of a ``create`` reservation (phase one of two). Longer than ``op_timeout_s`` so that a
    live creator commits before its reservations lapse; short so that a creator that dies or loses a
    race blocks the key for seconds only, even when its roll-back messages are lost."""

    refresh_fraction: float = 0.5
    """Owners refresh a record when this fraction of its TTL has passed: half the TTL leaves time for
    several failed refresh rounds before the replicas let it expire."""

    republish_s: float = 60.0
    """Owners also re-write their records at least this often, whatever the TTL: a position whose
    holders all die between two repairs is gone until its owner writes again. At a median session of
    84 s (the churn goal) that happens to a position about once in 1,000 s, so re-writing every
    minute keeps about 3 % of positions missing, far from the four of eight that fail a get. Costs
    one write to the R positions per owned record per minute (Kademlia republishes hourly)."""

    refresh_retry_s: float = 5.0
    """After a refresh that found no quorum, the owner tries again this much later."""

    request_timeout_s: float = 1.0
    """First wait for a replica's answer before resending. A routed request crosses about
    log2(N)/2 = 5 overlay hops of ~50 ms each way at N = 1,000, so 1 s is twice a slow round trip."""

    min_request_timeout_s: float = 0.3
    """The shortest wait before a resend, however fast this node's measured answers (:mod:`dht.rtt`
    waits the smoothed answer time plus four deviations, at most ``request_timeout_s``): a few hops'
    round trip, so that a burst of fast answers does not make every slightly slow one a resend."""

    request_attempts: int = 3
    """Sends per position and operation phase (the first and two retries, each waiting twice as long
    as the one before), within ``op_timeout_s``."""

    op_timeout_s: float = 6.0
    """An operation phase that has no quorum by then ends: a write fails (and rolls back), a get
    returns what a majority confirmed. Fits three attempts of 1 s, 2 s and 3 s."""

    not_ready_retry_s: float = 0.25
    """A replica that is still receiving its records from a neighbour answers ``not ready``; the
    requester asks again this much later (a neighbour hand-over takes about one round trip)."""

    max_pending_ops: int = 256
    """Operations in flight at once (owner refreshes included). Beyond it new operations fail at once
    with ``busy``: a bound on state whatever the application does."""

    sync_timeout_s: float = 2.0
    """A node whose neighbourhood changed answers writes with ``not ready`` until its new neighbours
    sent it the records it should now hold, or this long at most (a dead neighbour sends nothing)."""

    sync_resend_s: float = 0.5
    """A sync request without a complete answer is sent again this often while the node waits for it
    (``sync_timeout_s``): the answer comes over one direct link in a round trip, and a lost request or
    answer must not leave the node ready without the positions it should hold."""

    push_timeout_s: float = 1.0
    """Wait for a neighbour to acknowledge records pushed to it before sending them again. Pushes go
    over one direct link, so this is many round trips."""

    push_attempts: int = 4
    """Sends of one batch of pushed records; afterwards the next maintenance round starts anew."""

    resync_interval_s: float = 60.0
    """How often a node pushes again every position it is responsible for to the neighbours that
    should hold copies (jittered by up to 25 %), repairing copies lost to a restart or a lost push."""

    sweep_interval_s: float = 5.0
    """How often expired entries are removed from memory. Reads check expiry themselves, so this only
    bounds how long dead entries occupy space."""

    max_message_bytes: int = 4096
    """Largest DHT message this node sends or accepts. A record with the largest key and value takes
    about 1.4 kB, so every message can carry at least one; larger replies are split into parts."""

    peer_rate_per_s: float = 50.0
    """Requests per second accepted from one non-neighbour peer (a token bucket); a node doing a
    handful of operations at once sends 8-16 requests each."""

    peer_burst: float = 200.0
    """Token bucket depth per peer: a burst of about a dozen operations."""

    peer_handover_burst: float = 1000.0
    """Token bucket depth per non-neighbour peer for replication messages (store, sync, role), refilled
    at ``peer_rate_per_s``: a node that finds itself beyond a stretch of the ring (its view changed)
    hands over every position it holds there at once, one routed store and one role question per
    position — a few hundred messages to one node under churn at N = 300 (measured: 159 dropped with
    a shared bucket of 200). Separate from requests, so a hand-over never eats a peer's operations."""

    max_tracked_peers: int = 4096
    """Peers with a rate-limit bucket; the least recently seen bucket is forgotten beyond it."""

    def __post_init__(self) -> None:
        if not 3 <= self.replicas <= 32:
            raise ValueError("replicas must be between 3 and 32")
        if not 0 <= self.copies <= 4:
            raise ValueError("copies must be between 0 and 4")
        if not 1 <= self.max_key_bytes <= 1024 or not 1 <= self.max_value_bytes <= 8192:
            raise ValueError("max_key_bytes must be 1..1024 and max_value_bytes 1..8192")
        if self.max_values_per_key < 1 or self.max_records < 1:
            raise ValueError("max_values_per_key and max_records must be positive")
        if not 1 <= self.min_ttl_s <= self.max_ttl_s < 2**32:
            raise ValueError("need 1 <= min_ttl_s <= max_ttl_s < 2**32")
        if not self.min_ttl_s <= self.reserve_lease_s <= self.max_ttl_s:
            raise ValueError("reserve_lease_s must lie between min_ttl_s and max_ttl_s")
        if self.reserve_lease_s <= self.op_timeout_s:
            raise ValueError("reserve_lease_s must exceed op_timeout_s, or reservations lapse mid-create")
        if self.republish_s <= 0 or self.refresh_retry_s <= 0:
            raise ValueError("republish_s and refresh_retry_s must be positive")
        if not 0.1 <= self.refresh_fraction <= 0.9:
            raise ValueError("refresh_fraction must be between 0.1 and 0.9")
        if self.request_attempts < 1 or self.push_attempts < 1:
            raise ValueError("request_attempts and push_attempts must be at least 1")
        if not 0 < self.min_request_timeout_s <= self.request_timeout_s:
            raise ValueError("need 0 < min_request_timeout_s <= request_timeout_s")
        for name in (
            "request_timeout_s",
            "op_timeout_s",
            "not_ready_retry_s",
            "sync_timeout_s",
            "sync_resend_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        least = self.max_key_bytes + self.max_value_bytes + 300
        if self.max_message_bytes < least:
            raise ValueError(f"max_message_bytes must hold one record with headers: at least {least}")
        if self.peer_rate_per_s <= 0 or min(self.peer_burst, self.peer_handover_burst) < 1:
            raise ValueError("rate limits must be positive")
        if self.max_tracked_peers < 1:
            raise ValueError("rate limits must be positive")

    @property
    def majority(self) -> int:
        """Positions that must agree for an operation to succeed: 5 of 8."""
        return self.replicas // 2 + 1
