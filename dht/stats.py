"""Pure. Counters of one DHT node, for ``ipop status``, the simulator's report and the tests.

Everything a peer can make this node refuse or drop is counted here (and logged at debug), so that an
operator sees forged records, rate limiting and a full store without raising the log level.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class DhtStats:
    decode_errors: int = 0
    """Messages that were not valid DHT messages; dropped."""
    rate_limited: int = 0
    """Requests dropped because their sender exceeded its rate."""
    rate_limited_requests: int = 0
    """Of those, reads and writes of operations; the rest are replication (store, sync, role), which
    has a bucket of its own (``peer_handover_burst``)."""
    forged: int = 0
    """Records whose signature did not verify (forged create, put or delete); refused."""
    refused_full: int = 0
    """Records refused because the store or the key was full."""
    conflicts: int = 0
    """Claims refused because another owner held the key (first writer wins)."""
    stale: int = 0
    """Records refused because a newer statement of their owner was here."""
    not_ready: int = 0
    """Writes answered "not ready" while this node was still receiving its records."""
    writes_accepted: int = 0
    gets_answered: int = 0
    pushes_sent: int = 0
    """Batches of records sent to neighbours (copies, hand-over, sync answers), resends included."""
    sync_resends: int = 0
    """Sync requests sent again because no complete answer came within ``sync_resend_s``."""
    replication_bytes: int = 0
    """Payload bytes of every replication message sent (pushes and their resends, sync requests and
    answers, acknowledgements, role questions and answers): what keeping copies costs."""
    positions_handed_over: int = 0
    """Positions dropped after their new holders acknowledged them."""
    repairs_sent: int = 0
    ops_started: int = 0
    ops_failed: int = 0
    stray_replies: int = 0
    """Replies that matched no operation in flight (late, duplicated, or from an earlier life)."""

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
