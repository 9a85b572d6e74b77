"""Pure. The client side of DHT operations: one state machine per ``create``, ``put``, ``delete`` and
``get``, talking to the R positions of a key through its host (the :class:`~dht.node.DhtNode`).

Theory of operation. An operation runs in *phases*; a phase sends one request to every position and
collects one answer per position, resending to a silent position after t, 2t, ... (at most
``request_attempts`` sends; t from the node's measured answer times, :mod:`dht.rtt`, at most
``request_timeout_s``), listening after the last send until the phase gives up after
``op_timeout_s``. A phase's verdict comes from :mod:`dht.quorum`. The states and
transitions, all in one place:

    WriteOp  (put, delete, renew of an owned create)
        WRITING --majority accepted--> done(success); COMPLETING
        WRITING --majority impossible / timeout--> done(failure)
        COMPLETING --every position answered / timeout--> gone   (resends reach the rest; a position
                     that refused only for a racer's reservation is asked again until it accepts)

    CreateOp (create of a key this node does not own yet)
        RESERVING --majority reserved--> COMMITTING
        RESERVING --majority impossible / timeout--> roll back, done(failure)
        COMMITTING --majority committed--> done(Created)
        COMMITTING --majority impossible / timeout--> roll back, done(failure)

    GetOp
        READING --answers decide every value--> done(Values); LINGERING
        READING --timeout--> done(Values, or no_quorum while a value is undecided)
        LINGERING --late answer--> read repair of that position; --timeout--> gone   (a silent
                     position still gets its resends: its request may have been lost, and only its
                     answer tells whether it needs the repair)

Why two phases for create. Replicas accept a committed claim only when no other owner's live claim
is there (first writer wins, :mod:`dht.store`), and an owner wins only with a majority of *committed*
claims, so two winners would need two positions that each accepted both — impossible while a
position keeps its record. Safety rests on the commit phase alone. The reservation phase is for
liveness and clean failure: reservations are ranked by an order that every position shares, so when
many creators collide the positions converge on one of them instead of splitting the race between
whoever arrived first at each (at 1,000 nodes, 100 racers: a winner in 49 of 50 races instead of
none); and a race that nobody wins leaves behind only reservations, which live ``reserve_lease_s``
seconds even if the roll-back messages are lost or the creator dies, rather than full-length
records that would block the key for a whole TTL. A phase that ends undecided (answers lost) counts
as a failure and is rolled back: create errs on the side of failure.

A replica that answers "stale" knows a newer statement of ours (this node restarted and its sequence
counter began again): the operation takes a sequence number above it, signs again and resends.
"""

from __future__ import annotations

import logging
from typing import Protocol

from .codec import Get, GetReply, Held, Message, Status, Write, WriteReply
from .config import DhtConfig
from .events import AlreadyOwned, Created, Deleted, Failed, OpId, OpResult, Reason, Stored, Values
from .phase import Phase, SlotState
from .quorum import GetTally, answered_entries, write_decision, write_failure
from .record import Kind, Record

log = logging.getLogger(__name__)

STALE_BUMPS = 3
"""Re-signings after "stale" answers per operation: one suffices after a restart; more means a replica
keeps answering stale for another reason, and the answer then counts as a refusal."""


class OpHost(Protocol):
    """What an operation needs from the node that runs it."""

    config: DhtConfig

    def send_request(
        self, key: bytes, index: int, message: Message, now: float, *, detour: bool = False
    ) -> None:
        """Route a request to the key's position ``index``; ``detour``: through another first hop than
        the closest (a resend: the first request may have died in a dead first hop)."""
        ...

    def new_id(self) -> int: ...

    def sign(self, kind: Kind, key: bytes, value: bytes, ttl: int) -> Record:
        """A fresh record with the next sequence number of this node."""
        ...

    def observe_seq(self, seq: int) -> None:
        """A replica holds our statement with ``seq``: number the next ones above it."""
        ...

    def send_repair(self, key: bytes, index: int, held: Held, now: float) -> None:
        """Push one record to a position that lacked it (read repair; no answer expected)."""
        ...

    def resend_timeout(self) -> float:
        """The wait before the first resend to a silent position (:class:`dht.rtt.ResendTimer`)."""
        ...

    def answer_time(self, rtt: float) -> None:
        """A position answered ``rtt`` seconds after a request that was sent once (a clean sample)."""
        ...


class Op:
    """Common frame of the operations. ``result`` is set once, when the operation is decided;
    ``finished`` when it needs no more messages or timers (a decided operation may go on a little:
    a write completing the other positions, a get asking silent positions so as to repair them, a
    failed create rolling back)."""

    def __init__(self, host: OpHost, op_id: OpId, key: bytes, now: float) -> None:
        self.host = host
        self.op_id = op_id
        self.key = key
        self.started = now
        self.phase = Phase(host.config, host.new_id(), now, host.resend_timeout())
        self.req_ids = [self.phase.req_id]
        self.result: OpResult | None = None
        self.reported = False
        self.finished = False
        self.internal = False
        """An owner refresh started by the node itself: its result is not reported as an event."""
        self.refresh = False
        """On success, the node remembers the record as its own and refreshes it before expiry."""

    def _new_phase(self, now: float) -> None:
        self.phase = Phase(self.host.config, self.host.new_id(), now, self.host.resend_timeout())
        self.req_ids.append(self.phase.req_id)

    def next_deadline(self) -> float:
        return self.phase.next_deadline()

    def handle_timer(self, now: float) -> None:
        if self.finished:
            return
        if now < self.phase.deadline:
            self._send_due(now)
            if self.phase.open_count():
                return
        # The deadline passed, or every position answered or ran out of attempts: nothing more to
        # wait for in this phase.
        self._phase_timeout(now)
        for slot in self.phase.slots:
            if slot.state is SlotState.OPEN:
                slot.state = SlotState.GONE
        self.finished = True

    def _send_due(self, now: float) -> None:
        for index in self.phase.due(now):
            detour = self.phase.slots[index].sends % 2 == 0
            self.host.send_request(self.key, index, self._request(index), now, detour=detour)

    def _sample(self, index: int, now: float) -> None:
        rtt = self.phase.answer_time(index, now)
        if rtt is not None:
            self.host.answer_time(rtt)

    def _linger(self) -> None:
        """Decided: keep listening for late answers until the phase deadline, sending nothing more."""
        for slot in self.phase.slots:
            if slot.state is SlotState.OPEN:
                slot.resend_at = self.phase.deadline
                slot.sends = self.host.config.request_attempts

    def _request(self, index: int) -> Message:
        raise NotImplementedError

    def _phase_timeout(self, now: float) -> None:
        """The phase is over (deadline passed or nobody left to ask): decide with what arrived,
        open slots counting as silent."""
        raise NotImplementedError

    def handle_write_reply(self, reply: WriteReply, now: float) -> None:
        """Ignored by operations that do not write."""

    def handle_get_reply(self, reply: GetReply, now: float) -> None:
        """Ignored by operations that do not read."""


class WriteOp(Op):
    """One write phase: ``put``, ``delete``, or the renewal of a key this node already owns."""

    def __init__(self, host: OpHost, op_id: OpId, record: Record, now: float) -> None:
        super().__init__(host, op_id, record.key, now)
        self.record = record
        self.accepted = 0
        self.held = 0
        self.stale_bumps = 0
        self.refusals: list[tuple[Status, bytes]] = []
        self.accepted_at: set[int] = set()
        """Positions that accepted a record of this operation in any phase."""
        self.refused_at: set[int] = set()
        """Positions that refused in the current phase (and so hold nothing of it)."""
        self.reserved_at: set[int] = set()
        """Positions that refused in the current phase only because a racer's reservation was there:
        once this write succeeds they are asked again, since the racer rolls back or its lease lapses."""
        self._send_due(now)

    def _request(self, index: int) -> Message:
        return Write(self.phase.req_id, index, self.record)

    def handle_write_reply(self, reply: WriteReply, now: float) -> None:
        if self.finished or reply.req_id != self.phase.req_id:
            return
        slot = self.phase.slots[reply.index]
        if slot.state is not SlotState.OPEN:
            return
        status = reply.status
        self._sample(reply.index, now)
        if self.result is not None:
            slot.state = SlotState.DONE
            self._late_answer(reply.index, status, now)
        elif status.accepted:
            slot.state = SlotState.DONE
            self.accepted += 1
            self.held += status is Status.OK_HELD
            self.accepted_at.add(reply.index)
        elif status is Status.NOT_READY:
            self.phase.retry_soon(reply.index, now, self.host.config.not_ready_retry_s)
        elif status is Status.STALE and reply.seq < self.record.seq:
            self.phase.retry_soon(reply.index, now, 0.0)  # we numbered above it already: resend
        elif status is Status.STALE and self.stale_bumps < STALE_BUMPS:
            self.stale_bumps += 1
            self.host.observe_seq(reply.seq)
            r = self.record
            self.record = self.host.sign(r.kind, r.key, r.value, r.ttl)
            self.phase.retry_soon(reply.index, now, 0.0)
        else:
            slot.state = SlotState.DONE
            self.refusals.append((status, reply.owner))
            self.refused_at.add(reply.index)
            if status is Status.CONFLICT_RESERVED:
                self.reserved_at.add(reply.index)
        if self.result is None:
            self._send_due(now)
            self._decide(now)
        if self.result is not None and self.phase.open_count() == 0:
            self.finished = True

    def _late_answer(self, index: int, status: Status, now: float) -> None:
        """An answer after the decision: a succeeded write keeps asking a position held up by a racer's
        reservation or by a hand-over (see :meth:`_succeeded`)."""
        if isinstance(self.result, Failed | AlreadyOwned):
            return
        if status in (Status.CONFLICT_RESERVED, Status.NOT_READY):
            self._ask_again(index, now)

    def _ask_again(self, index: int, now: float) -> None:
        slot = self.phase.slots[index]
        slot.state = SlotState.OPEN
        delay = self.host.config.not_ready_retry_s if slot.sends == 0 else self.phase.timeout
        self.phase.retry_soon(index, now, delay)

    def _phase_timeout(self, now: float) -> None:
        if self.result is None:
            self._decide(now, over=True)

    def _decide(self, now: float, *, over: bool = False) -> None:
        c = self.host.config
        open_ = 0 if over or now >= self.phase.deadline else self.phase.open_count()
        verdict = write_decision(self.accepted, open_, c.majority)
        if verdict is True:
            self._succeeded(now)
        elif verdict is False:
            answered = self.accepted + len(self.refusals)
            self._failed(write_failure(self.key, self.refusals, answered, c.replicas), now)

    def _succeeded(self, now: float) -> None:
        """Decided; positions that have not answered yet still get their resends until they do or
        the phase ends, so that the record reaches all R positions, not just a majority. So do the
        positions that refused only for a losing racer's reservation: a majority is the least that
        makes a create win, and one of its holders dying before its copies have the record would
        leave a minority (4 of 8) and a value that no get can confirm until the owner republishes.
        Writing the refused ones once the losers rolled back leaves 7 or 8 holders instead. Never two
        winners still holds: a replica accepts the claim only where no other owner's claim is live."""
        for index in sorted(self.reserved_at):
            self._ask_again(index, now)
        r = self.record
        if r.kind is Kind.DELETE:
            self.result = Deleted(r.key, r.value)
        elif r.kind is Kind.PUT:
            self.result = Stored(r.key, r.value, r.ttl)
        else:
            self.result = Created(r.key, r.value, r.ttl)

    def _failed(self, result: OpResult, now: float) -> None:
        self.result = result
        self.finished = True


class CreateOp(WriteOp):
    """Reserve at a majority, then commit at a majority; roll back on failure (module docstring)."""

    def __init__(self, host: OpHost, op_id: OpId, key: bytes, value: bytes, *, ttl: int, now: float) -> None:
        self.ttl = ttl
        self.committing = False
        self._tomb: Record | None = None
        self._tomb_req = 0
        lease = host.config.reserve_lease_s
        super().__init__(host, op_id, host.sign(Kind.RESERVE, key, value, lease), now)

    def _succeeded(self, now: float) -> None:
        if self.committing:
            super()._succeeded(now)
            return
        self.committing = True
        self.record = self.host.sign(Kind.CREATE, self.key, self.record.value, self.ttl)
        self.accepted = 0
        self.refusals = []
        self.refused_at = set()
        self.reserved_at = set()
        self._new_phase(now)
        log.debug("create %r: reserved, committing", self.key)
        self._send_due(now)

    def _failed(self, result: OpResult, now: float) -> None:
        self.result = result
        if self.held:
            # This owner held the key already (it restarted and forgot): what it held stays its own.
            log.info("create %r failed (%s); keeping the record this node already held", self.key, result)
            self.finished = True
            return
        self._roll_back(now)

    def _roll_back(self, now: float) -> None:
        """Tombstone our claim, once and without waiting, where it may be held: at once where it was
        accepted; for positions that have not answered yet, when they answer "accepted" or, silent,
        at the phase deadline (the answer may have been lost); never where it was refused. A position
        the tombstone misses keeps only a reservation, which lapses after ``reserve_lease_s``, or
        after a failed commit a record that lives one TTL at most."""
        life = self.ttl if self.committing else self.host.config.reserve_lease_s
        self._tomb = self.host.sign(Kind.DELETE, self.key, self.record.value, life)
        self._tomb_req = self.host.new_id()
        waiting = False
        for index, slot in enumerate(self.phase.slots):
            if index in self.accepted_at or slot.state is SlotState.GONE:
                self._send_tomb(index, now)  # accepted, or silent to the end
            elif slot.state is SlotState.OPEN:
                if now >= self.phase.deadline:
                    self._send_tomb(index, now)
                else:
                    waiting = True
        if waiting:
            self._linger()
        else:
            self.finished = True

    def _send_tomb(self, index: int, now: float) -> None:
        assert self._tomb is not None
        self.host.send_request(self.key, index, Write(self._tomb_req, index, self._tomb), now)

    def _late_answer(self, index: int, status: Status, now: float) -> None:
        if self._tomb is None:
            super()._late_answer(index, status, now)
        elif status.accepted and index not in self.accepted_at:
            self._send_tomb(index, now)  # rolling back: it accepted after we gave up

    def _phase_timeout(self, now: float) -> None:
        if self.result is None:
            self._decide(now, over=True)  # fails (nothing open any more), rolls back the silent ones
        elif self._tomb is not None:
            for index, slot in enumerate(self.phase.slots):
                if slot.state is SlotState.OPEN and index not in self.accepted_at:
                    self._send_tomb(index, now)


class GetOp(Op):
    """Ask every position; decide as early as the quorum rules allow; repair stragglers."""

    def __init__(self, host: OpHost, op_id: OpId, key: bytes, now: float) -> None:
        super().__init__(host, op_id, key, now)
        c = host.config
        self.tally = GetTally(key, c.replicas, c.majority)
        self._send_due(now)

    def _request(self, index: int) -> Message:
        return Get(self.phase.req_id, index, self.key)

    def handle_get_reply(self, reply: GetReply, now: float) -> None:
        if self.finished or reply.req_id != self.phase.req_id or reply.key != self.key:
            return
        slot = self.phase.slots[reply.index]
        if slot.state is not SlotState.OPEN:
            return
        if reply.parts != slot.expected:
            slot.parts.clear()  # a new answer with another split (the replica's content changed)
            slot.expected = reply.parts
        slot.parts[reply.part] = reply.entries
        if len(slot.parts) < reply.parts:
            return
        entries = answered_entries(slot.parts)
        slot.parts.clear()
        self._sample(reply.index, now)
        if not reply.ready and self.result is None:
            slot.provisional = entries
            self.phase.retry_soon(reply.index, now, self.host.config.not_ready_retry_s)
            self._send_due(now)
            return
        slot.state = SlotState.DONE
        slot.answered_at = now
        slot.provisional = None
        self.tally.answer(reply.index, entries)
        if self.result is None:
            if self.tally.complete(self.phase.open_count()):
                self.result = Values(self.key, self.tally.values())
                # No _linger: a position still silent keeps its resends. Its request may have gone
                # into a link whose peer died unnoticed, and a position never heard from is never
                # repaired (a third of a key's positions emptied by a crash stayed empty until the
                # owner's republish when the one request to one of them was lost so).
                self._repair(now, None)
        else:
            self._repair(now, reply.index)
        if self.phase.open_count() == 0:
            self.finished = True

    def _phase_timeout(self, now: float) -> None:
        if self.result is not None:
            return
        for index, slot in enumerate(self.phase.slots):
            if slot.state is SlotState.OPEN and slot.provisional is not None:
                self.tally.answer(index, slot.provisional)
        replicas = self.host.config.replicas
        n = len(self.tally.answers)
        if self.tally.complete(replicas - n):
            self.result = Values(self.key, self.tally.values())
            self._repair(now, None)
        elif self.tally.enough_answers():
            # A value some positions hold that the silent ones could still confirm: neither returning
            # it (no majority vouches for it) nor leaving it out ("no such value") would be the truth.
            self.result = Failed(Reason.NO_QUORUM, f"{n} of {replicas} answered; a value is undecided")
        else:
            self.result = Failed(Reason.NO_QUORUM, f"only {n} of {replicas} answered")

    def _repair(self, now: float, only: int | None) -> None:
        for index, held in self.tally.repairs():
            if only is None or index == only:
                self.host.send_repair(self.key, index, held, now)
