"""Pure. ``DhtNode``: one node's DHT, a sans-IO core on the overlay's :class:`~overlay.Router` seam.

Like aioquic's connection, it never waits and never reads a clock: the runtime (or the simulator, or a
test) calls it with what happened and the current ``now`` —

    handle_delivered(Delivered, now)      a DHT message from the overlay
    handle_neighbours(NeighboursChanged, now)
    handle_timer(now)                     when ``get_timer()`` is due
    create / put / get / delete(..., now) the application's requests; each returns an ``OpId``

— and it sends through ``router.send`` and reports through ``next_event()`` (``OpCompleted`` with the
result of an operation, ``OwnershipLost``). Three parts do the work: :mod:`dht.store` is the replica
(what this node holds and what it accepts), :mod:`dht.ops` the client side of operations, and
:mod:`dht.replication` moves positions between neighbours as the ring changes. This module routes
messages between them, answers requests, keeps the records this node owns alive by refreshing them,
and applies the per-peer rate limit.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from random import Random

from overlay import Address, Delivered, Identity, NeighboursChanged, Router, Service, key_address, short

from .codec import (
    DecodeError,
    Digest,
    DigestReply,
    Get,
    GetReply,
    Held,
    Message,
    PositionRecords,
    Role,
    Status,
    Store,
    StoreAck,
    Sync,
    Write,
    WriteReply,
    decode,
    encode,
    split_entries,
)
from .config import DhtConfig
from .events import (
    AlreadyOwned,
    Created,
    DhtEvent,
    Failed,
    OpCompleted,
    OpId,
    OpResult,
    OwnershipLost,
    Reason,
    Stored,
)
from .ops import CreateOp, GetOp, Op, WriteOp
from .ratelimit import RateLimiter
from .record import MAX_SEQ, Kind, Record, sign_record
from .replication import Replicator
from .rtt import ResendTimer
from .stats import DhtStats
from .store import Store as RecordStore

log = logging.getLogger(__name__)

REPLY_HEADROOM = 64
"""Bytes of a message besides its key and entries (ids, indices, headers), rounded up."""


@dataclass(slots=True)
class OwnedRecord:
    """A record this node wrote and keeps alive."""

    key: bytes
    value: bytes
    kind: Kind
    ttl: int
    refresh_at: float
    refreshing: bool = False


class DhtNode:
    """The DHT of one node. Not thread-safe; every call takes ``now`` in seconds."""

    def __init__(self, router: Router, identity: Identity, config: DhtConfig, rng: Random) -> None:
        if router.address != identity.address:
            raise ValueError("the router's address must be the identity's")
        self.router = router
        self.identity = identity
        self.config = config
        self.rng = rng
        self.stats = DhtStats()
        self.store = RecordStore(config)
        self.replicator = Replicator(
            identity.address,
            self.store,
            config,
            rng=rng,
            stats=self.stats,
            send=self._send,
            new_id=self.new_id,
        )
        self.resend_timer = ResendTimer(config.request_timeout_s, config.min_request_timeout_s)
        self._limiter = RateLimiter(config.peer_rate_per_s, config.peer_burst, config.max_tracked_peers)
        self._handover_limiter = RateLimiter(
            config.peer_rate_per_s, config.peer_handover_burst, config.max_tracked_peers
        )
        self._tag = short(identity.address)
        self._seq = 0
        self._next_op = 0
        self._ops: dict[OpId, Op] = {}
        self._by_req: dict[int, Op] = {}
        self._owned: dict[tuple[bytes, bytes], OwnedRecord] = {}
        self._events: deque[DhtEvent] = deque()
        self._sweep_at: float | None = None

    @property
    def address(self) -> Address:
        return self.identity.address

    # -- the application's operations -----------------------------------------------------------

    def create(self, key: bytes, value: bytes, ttl: int, now: float, *, refresh: bool = True) -> OpId:
        """Make ``value`` the key's only value, owned by this node: succeeds only when no other owner
        holds a live value. Repeating it renews the lease. ``refresh``: keep it alive until deleted."""
        self._check(key, value, ttl)
        owned = self._owned.get((key, value))
        if owned is not None and owned.kind is Kind.CREATE:
            return self._start(
                lambda op_id: WriteOp(self, op_id, self.sign(Kind.CREATE, key, value, ttl), now), now, refresh
            )
        return self._start(lambda op_id: CreateOp(self, op_id, key, value, ttl=ttl, now=now), now, refresh)

    def put(self, key: bytes, value: bytes, ttl: int, now: float, *, refresh: bool = True) -> OpId:
        """Add or renew ``value`` among the key's values."""
        self._check(key, value, ttl)
        return self._start(
            lambda op_id: WriteOp(self, op_id, self.sign(Kind.PUT, key, value, ttl), now), now, refresh
        )

    def delete(self, key: bytes, value: bytes, now: float) -> OpId:
        """Remove this node's ``value`` under ``key`` (a signed tombstone) and stop refreshing it."""
        self._check(key, value, self.config.min_ttl_s)
        owned = self._owned.pop((key, value), None)
        life = owned.ttl if owned is not None else self.config.max_ttl_s
        return self._start(
            lambda op_id: WriteOp(self, op_id, self.sign(Kind.DELETE, key, value, life), now), now, False
        )

    def get(self, key: bytes, now: float) -> OpId:
        """Every live value under ``key`` that a majority of its positions confirm."""
        self._check(key, b"", self.config.min_ttl_s)
        return self._start(lambda op_id: GetOp(self, op_id, key, now), now, False)

    def owned(self) -> list[OwnedRecord]:
        """The records this node keeps alive, for ``ipop status``."""
        return list(self._owned.values())

    def operation(self, op_id: OpId) -> Op | None:
        """The state machine of an operation in flight, for observers (the simulator's tail analysis);
        None once it finished."""
        return self._ops.get(op_id)

    def next_event(self) -> DhtEvent | None:
        return self._events.popleft() if self._events else None

    def _check(self, key: bytes, value: bytes, ttl: int) -> None:
        c = self.config
        if not isinstance(key, bytes) or not 1 <= len(key) <= c.max_key_bytes:
            raise ValueError(f"a key has 1..{c.max_key_bytes} bytes")
        if not isinstance(value, bytes) or len(value) > c.max_value_bytes:
            raise ValueError(f"a value has at most {c.max_value_bytes} bytes")
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not c.min_ttl_s <= ttl <= c.max_ttl_s:
            raise ValueError(f"ttl must be an integer number of seconds in {c.min_ttl_s}..{c.max_ttl_s}")

    def _start(self, make: Callable[[OpId], Op], now: float, refresh: bool) -> OpId:
        self._started(now)
        self._next_op += 1
        op_id = OpId(self._next_op)
        if len(self._ops) >= self.config.max_pending_ops:
            detail = f"{len(self._ops)} operations in flight"
            self._events.append(OpCompleted(op_id, Failed(Reason.BUSY, detail)))
            return op_id
        op = make(op_id)
        op.refresh = refresh
        self.stats.ops_started += 1
        self._ops[op_id] = op
        self._after(op, now)
        return op_id

    # -- what operations need from the node (ops.OpHost) ----------------------------------------

    def new_id(self) -> int:
        """A random non-zero 64-bit id (0 means "none" on the wire)."""
        return self.rng.getrandbits(64) or 1

    def sign(self, kind: Kind, key: bytes, value: bytes, ttl: int) -> Record:
        self._seq = min(self._seq + 1, MAX_SEQ)
        return sign_record(self.identity, kind, key, value, ttl=ttl, seq=self._seq)

    def observe_seq(self, seq: int) -> None:
        self._seq = max(self._seq, min(seq, MAX_SEQ - 1))

    def send_request(
        self, key: bytes, index: int, message: Message, now: float, *, detour: bool = False
    ) -> None:
        self.router.send(
            key_address(key, index), Service.DHT, encode(message), now, exact=False, detour=detour
        )

    def send_repair(self, key: bytes, index: int, held: Held, now: float) -> None:
        self.stats.repairs_sent += 1
        self.replicator.send_routed(PositionRecords(key, index, (held,)), now)

    def resend_timeout(self) -> float:
        return self.resend_timer.timeout()

    def answer_time(self, rtt: float) -> None:
        self.resend_timer.sample(rtt)

    def _send(self, dest: Address, payload: bytes, now: float, exact: bool) -> None:
        self.router.send(dest, Service.DHT, payload, now, exact=exact)

    # -- operation bookkeeping ------------------------------------------------------------------

    def _after(self, op: Op, now: float) -> None:
        """Report a newly decided operation, retire a finished one, and index its current phase."""
        if op.result is not None and not op.reported:
            op.reported = True
            self._report(op, op.result, now)
        if op.finished:
            self._ops.pop(op.op_id, None)
            for req_id in op.req_ids:
                self._by_req.pop(req_id, None)
        else:
            self._by_req[op.phase.req_id] = op

    def _report(self, op: Op, result: OpResult, now: float) -> None:
        if isinstance(result, Failed | AlreadyOwned):
            self.stats.ops_failed += 1
        log.debug("%s: op %d on %r: %s", self._tag, op.op_id, op.key, result)
        if isinstance(op, WriteOp):
            self._owner_bookkeeping(op, result, now)
        if not op.internal:
            self._events.append(OpCompleted(op.op_id, result))

    def _owner_bookkeeping(self, op: WriteOp, result: OpResult, now: float) -> None:
        r = op.record
        ident = (r.key, r.value)
        owned = self._owned.get(ident)
        if isinstance(result, Created | Stored) and (op.refresh or owned is not None):
            if r.kind is Kind.CREATE:
                for other in [i for i, o in self._owned.items() if i[0] == r.key and o.kind is Kind.CREATE]:
                    del self._owned[other]
            ttl = result.ttl
            self._owned[ident] = OwnedRecord(r.key, r.value, r.kind, ttl, now + self._refresh_interval(ttl))
        elif owned is not None and op.internal:
            owned.refreshing = False
            if isinstance(result, AlreadyOwned):
                del self._owned[ident]
                log.info("%s: lost %r to another owner", self._tag, r.key)
                self._events.append(OwnershipLost(r.key, r.value, result.owner))
            else:
                owned.refresh_at = now + self.config.refresh_retry_s

    def _refresh_interval(self, ttl: int) -> float:
        return min(ttl * self.config.refresh_fraction, self.config.republish_s)

    def _refresh_due(self, now: float) -> None:
        for owned in list(self._owned.values()):
            if owned.refreshing or owned.refresh_at > now:
                continue
            if len(self._ops) >= self.config.max_pending_ops:
                owned.refresh_at = now + self.config.refresh_retry_s
                continue
            self._next_op += 1
            record = self.sign(owned.kind, owned.key, owned.value, owned.ttl)
            op = WriteOp(self, OpId(self._next_op), record, now)
            op.internal = True
            owned.refreshing = True
            self._ops[op.op_id] = op
            self._after(op, now)

    # -- the overlay's events -------------------------------------------------------------------

    def handle_neighbours(self, event: NeighboursChanged, now: float) -> None:
        self._started(now)
        self.replicator.set_view(event.left, event.right, now)

    def handle_delivered(self, event: Delivered, now: float) -> None:
        """One DHT message. Whatever it contains, it never raises: a bad message is counted and
        dropped."""
        if event.service != Service.DHT:
            return
        self._started(now)
        try:
            message = decode(event.payload, self.config)
        except DecodeError as exc:
            self.stats.decode_errors += 1
            log.debug("%s: bad message from %s: %s", self._tag, short(event.src), exc)
            return
        src = event.src
        request = isinstance(message, Write | Get)
        if (request or isinstance(message, Sync | Store | Role | Digest)) and not self._allowed(
            src, request, now
        ):
            self.stats.rate_limited += 1
            self.stats.rate_limited_requests += request
            log.debug("%s: rate limit: dropped %s from %s", self._tag, type(message).__name__, short(src))
            return
        if isinstance(message, Write):
            self._on_write(src, message, now)
        elif isinstance(message, Get):
            self._on_get(src, message, now)
        elif isinstance(message, WriteReply | GetReply):
            op = self._by_req.get(message.req_id)
            if op is None:
                self.stats.stray_replies += 1
                return
            if isinstance(message, WriteReply):
                op.handle_write_reply(message, now)
            else:
                op.handle_get_reply(message, now)
            self._after(op, now)
        elif isinstance(message, Store):
            self.replicator.handle_store(src, message, now)
        elif isinstance(message, StoreAck):
            self.replicator.handle_ack(src, message, now)
        elif isinstance(message, Sync):
            self.replicator.handle_sync(src, message, now)
        elif isinstance(message, Role):
            self.replicator.handle_role(src, message, now)
        elif isinstance(message, Digest):
            self.replicator.handle_digest(src, message, now)
        elif isinstance(message, DigestReply):
            self.replicator.handle_digest_reply(src, message, now)
        else:
            self.replicator.handle_role_reply(src, message, now)

    def _allowed(self, src: Address, request: bool, now: float) -> bool:
        """Neighbours are never limited. Others have one bucket for operation requests and one for
        replication (store, sync, role): a node whose view no longer counts us a neighbour hands its
        positions over one routed message per position, plus a role question each, and at N = 300,
        S = 84 s such hand-overs were all that the limiter dropped (159 messages, no request) while a
        single bucket of ``peer_burst`` was shared with them."""
        if src == self.address or self.replicator.is_neighbour(src):
            return True
        limiter = self._limiter if request else self._handover_limiter
        return limiter.allow(src, now)

    def _on_write(self, src: Address, message: Write, now: float) -> None:
        record = message.record
        pos = key_address(record.key, message.index)
        if not self.replicator.ready(now):
            self.stats.not_ready += 1
            reply = WriteReply(message.req_id, message.index, Status.NOT_READY)
        else:
            outcome = self.store.write(pos, message.index, record, now)
            self._count(outcome.status)
            reply = WriteReply(message.req_id, message.index, outcome.status, outcome.seq, outcome.owner)
        self._send(src, encode(reply), now, True)
        if reply.status.accepted:
            self.replicator.maintain(now, [pos])

    def _count(self, status: Status) -> None:
        s = self.stats
        if status.accepted:
            s.writes_accepted += 1
        elif status is Status.FORGED:
            s.forged += 1
            log.debug("%s: refused a forged record", self._tag)
        elif status in (Status.STORE_FULL, Status.KEY_FULL):
            s.refused_full += 1
        elif status in (Status.CONFLICT_CREATED, Status.CONFLICT_RESERVED, Status.CONFLICT_PUT):
            s.conflicts += 1
        elif status is Status.STALE:
            s.stale += 1

    def _on_get(self, src: Address, message: Get, now: float) -> None:
        pos = key_address(message.key, message.index)
        entries = self.store.read(pos, now, reservations=False)
        ready = self.replicator.ready(now)
        budget = self.config.max_message_bytes - len(message.key) - REPLY_HEADROOM
        parts = split_entries(entries, budget)
        for n, part in enumerate(parts):
            reply = GetReply(message.req_id, message.index, message.key, n, len(parts), ready, tuple(part))
            self._send(src, encode(reply), now, True)
        self.stats.gets_answered += 1

    # -- time -----------------------------------------------------------------------------------

    def _started(self, now: float) -> None:
        if self._sweep_at is None:
            self._sweep_at = now + self.config.sweep_interval_s
            self.replicator.handle_timer(now)

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should next be called (absolute, in the caller's ``now``)."""
        times = [op.next_deadline() for op in self._ops.values()]
        times += [o.refresh_at for o in self._owned.values() if not o.refreshing]
        replication = self.replicator.next_deadline()
        if replication is not None:
            times.append(replication)
        if self._sweep_at is not None:
            times.append(self._sweep_at)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        self._started(now)
        for op in list(self._ops.values()):
            if op.next_deadline() <= now:
                op.handle_timer(now)
                self._after(op, now)
        self._refresh_due(now)
        self.replicator.handle_timer(now)
        if self._sweep_at is not None and self._sweep_at <= now:
            self._sweep_at = now + self.config.sweep_interval_s
            self.replicator.sweep(now)
