"""Pure. Keeping every position on the right nodes while the ring changes: copies on neighbours,
hand-over to new holders before dropping, and the "sync" that makes a newcomer ready.

Theory of operation. For a position p, the *desired holders* are the ``1 + copies`` nodes closest to p
among this node and its ring neighbours: the first is the *primary* (where routed requests for p land),
the others keep copies so that an abrupt death loses nothing — the node that becomes closest already
holds p. From its own view each holder of p acts:

* primary: pushes p to the copies that do not have its current version;
* copy: pushes p to the primary if the primary lacks it (e.g. the primary is new);
* neither (the ring moved on, e.g. a node joined between p and us): pushes p to every desired holder
  and drops p once all of them have *acknowledged* the current version — records move before the old
  holder lets go. A position outside the arc our neighbours span is handed to whoever the overlay
  routes p to, and dropped when that node (not we ourselves) acknowledges it.

"Not a holder" is always certain; "a holder" often is not (:mod:`dht.view`): beyond our farthest
neighbours there may be closer nodes we do not know. An unsure holder keeps p and asks, with a small
:class:`~dht.codec.Role` message routed to p, the node closest to p — which knows the holders — whether
it still counts us. "Unneeded" (and it holds the same version: the digest is the same on every
node) lets us drop p; "differs" makes us hand our version to it first. We ask when a node closer to
p than us appears in our neighbourhood (the one way a holder becomes an extra copy), and at every
resync, so an extra copy lives a minute at most.

Which version a neighbour has is tracked per (position, neighbour) as a digest of the statements,
set when the neighbour acknowledges a push or when it sent us exactly what we now hold, so unchanged
positions cost nothing and a change travels once per neighbour. Every ``resync_interval_s`` the
digests are forgotten and everything is checked again, which repairs copies lost without a trace: a
neighbour is first sent the digests alone (:mod:`dht.digests`) and then only the positions it does not
hold in our version; a hand-over routed to a position is pushed in full.

A node whose neighbourhood gained members asks each new one to *sync*: "send me the positions I should
hold". Until every answer arrived (or ``sync_timeout_s`` passed) the node is *not ready*: it answers
writes with NOT_READY, so a newcomer never accepts a create for a position whose reservation its
predecessor still holds — the race :mod:`dht.ops` must never lose. The other way round, a new
neighbour is pushed nothing until it asked us to sync; both waits are :mod:`dht.syncs`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from random import Random

from overlay import Address, key_address, short

from .batches import PendingPush, PushBatch
from .codec import (
    Digest,
    DigestReply,
    PositionRecords,
    Role,
    RoleReply,
    Status,
    StoreAck,
    Sync,
    Verdict,
    encode,
    pack_positions,
)
from .codec import Store as StoreMsg
from .config import DhtConfig
from .digests import DigestExchange, same_versions
from .stats import DhtStats
from .store import Store as RecordStore
from .store import digest_of
from .syncs import SyncWaits
from .view import View

log = logging.getLogger(__name__)

Send = Callable[[Address, bytes, float, bool], None]
"""(destination, payload, now, exact): route one DHT message."""


class Replicator:
    def __init__(
        self,
        me: Address,
        store: RecordStore,
        config: DhtConfig,
        *,
        rng: Random,
        stats: DhtStats,
        send: Send,
        new_id: Callable[[], int],
    ) -> None:
        self.me = me
        self.store = store
        self.config = config
        self.rng = rng
        self.stats = stats
        self._send_raw = send
        self._new_id = new_id
        self.view = View(me, config.copies)
        self._has: dict[Address, dict[Address, int]] = {}
        self._asked: dict[Address, int] = {}
        """Positions we are unsure to hold, with our rank among the nodes we knew when we last asked
        (or first held them): a node closer than us appeared when the rank grows."""
        self._resyncing = False
        self._roles: dict[int, tuple[Address, int, float]] = {}
        """Role questions in flight: req_id -> (position, digest asked about, when). One whose answer
        is lost (a dead link on the way under churn) is forgotten at the first sweep after
        ``push_timeout_s * push_attempts`` (as long as a push is retried); the position is asked about
        again at the next resync, as before."""
        self._pending: dict[tuple[Address, bool], dict[Address, PendingPush]] = {}
        self._outbox: dict[tuple[Address, bool], dict[Address, None]] = {}
        self._batches: dict[int, PushBatch] = {}
        self._syncs = SyncWaits(config.sync_timeout_s, config.sync_resend_s)
        self._resync_at: float | None = None
        self._digests = DigestExchange(config, new_id)
        self._digest_outbox: dict[Address, dict[Address, None]] = {}
        """At a resync, what would be pushed to each neighbour: asked about by digest first."""

    def _send(self, dest: Address, payload: bytes, now: float, exact: bool) -> None:
        self.stats.replication_bytes += len(payload)
        self._send_raw(dest, payload, now, exact)

    # -- the view -------------------------------------------------------------------------------

    @property
    def members(self) -> dict[Address, None]:
        return self.view.members

    def set_view(self, left: Iterable[Address], right: Iterable[Address], now: float) -> None:
        before = self.view.members
        self.view.update(left, right)
        for gone in [a for a in before if a not in self.members]:
            self._forget_peer(gone)
        for new in [a for a in self.members if a not in before]:
            sync_id = self._new_id()
            self._syncs.joined(new, sync_id, now)
            self._send(new, encode(Sync(sync_id)), now, True)
        log.info("%s: neighbours %s | %s", short(self.me), _names(self.view.left), _names(self.view.right))
        self.maintain(now)

    def is_neighbour(self, peer: Address) -> bool:
        return peer in self.members

    def ready(self, now: float) -> bool:
        """False while a new neighbour may still be sending us positions we should hold."""
        return self._syncs.ready(now)

    def _forget_peer(self, peer: Address) -> None:
        for has in self._has.values():
            has.pop(peer, None)
        self._pending.pop((peer, False), None)
        self._outbox.pop((peer, False), None)
        self._syncs.left(peer)
        self._digests.forget(peer)
        self._digest_outbox.pop(peer, None)
        for batch_id in [i for i, b in self._batches.items() if b.target == peer and not b.routed]:
            del self._batches[batch_id]

    # -- maintenance ----------------------------------------------------------------------------

    def maintain(self, now: float, positions: Iterable[Address] | None = None) -> None:
        """Queue the pushes that the rules of the module docstring call for, drop what has been
        handed over, and send."""
        for pos in self.store.positions() if positions is None else positions:
            self._maintain_one(pos, now)
        self._flush(now)

    def _maintain_one(self, pos: Address, now: float) -> None:
        if self.store.live_size(pos, now) == 0:
            self._forget_position(pos)
            return
        digest = self.store.digest(pos, now)
        has = self._has.setdefault(pos, {})
        desired = self.view.desired(pos)
        if self.me not in desired:  # certainly not a holder
            if not self.view.in_span(pos):  # and the holders are beyond our view: let routing find them
                if has.get(self.me) != digest:
                    self._queue((pos, True), pos)
                return
            if all(has.get(t) == digest for t in desired):
                self._drop(pos, "acknowledged by " + _names(desired))
                return
            targets = desired
        elif desired[0] != self.me and not self.view.in_span(pos):
            # Beyond the arc we can rank, with a neighbour closer to it than us (so a side of our view
            # reaches towards it): that we rank second or third among our own neighbourhood says
            # nothing, and those neighbours are not its holders either. Pushing it to them spread
            # such positions along the ring under churn (each receiver ranked itself the same way and
            # passed it on: 10x the records per node at N = 80, S = 84 s). Only the node closest to it
            # knows: ask it once, and again at every resync; it answers needed, unneeded (drop) or
            # differs (hand it over). (First among our neighbourhood yet beyond it happens only with a
            # side of the view empty, a joiner's or one whose neighbours died: then we may well be the
            # primary, and keep serving the copies.)
            if self._resyncing or pos not in self._asked:
                self._asked[pos] = desired.index(self.me)
                self._ask(pos, digest, now)
            return
        elif desired[0] == self.me:
            targets = desired[1:]
        else:
            targets = desired[:1]
        for target in targets:
            if has.get(target) != digest:
                self._queue((target, False), pos)
        if not self.view.certain(pos):
            rank = desired.index(self.me)
            if self._resyncing or rank > self._asked.setdefault(pos, rank):
                self._asked[pos] = rank
                self._ask(pos, digest, now)

    def _ask(self, pos: Address, digest: int, now: float) -> None:
        entry = self.store.position(pos)
        if entry is None:
            return
        req_id = self._new_id()
        self._roles[req_id] = (pos, digest, now)
        self._send(pos, encode(Role(req_id, entry.key, entry.index, digest)), now, False)

    def _queue(self, target: tuple[Address, bool], pos: Address) -> None:
        peer, routed = target
        if not routed and (self._syncs.holding(peer) or self._digests.in_flight(peer, pos)):
            return  # its sync request will fetch it, or our digest asks whether it holds it already
        if pos in self._pending.get(target, {}):
            return
        if self._resyncing and not routed:
            self._digest_outbox.setdefault(peer, {})[pos] = None
        else:
            self._outbox.setdefault(target, {})[pos] = None

    def _drop(self, pos: Address, why: str) -> None:
        log.debug("%s: dropping position %s: %s", short(self.me), short(pos), why)
        self._forget_position(pos)
        self.stats.positions_handed_over += 1

    def _forget_position(self, pos: Address) -> None:
        self.store.drop(pos)
        self._has.pop(pos, None)
        self._asked.pop(pos, None)

    def _flush(self, now: float) -> None:
        asks, self._digest_outbox = self._digest_outbox, {}
        for peer, positions in asks.items():
            entries = [(p, self.store.digest(p, now)) for p in positions if self.store.live_size(p, now)]
            for message in self._digests.ask(peer, entries, now):
                self._send(peer, encode(message), now, True)
        outbox, self._outbox = self._outbox, {}
        for (target, routed), positions in outbox.items():
            snaps = [(p, s) for p in positions if (s := self.store.snapshot(p, now)) is not None]
            if routed:
                for pos, snap in snaps:  # one position per routed batch: each may land elsewhere
                    self._send_batches((target, True), [(pos, snap)], 0, now)
            elif snaps:
                self._send_batches((target, False), snaps, 0, now)

    def _send_batches(
        self,
        target: tuple[Address, bool],
        snaps: list[tuple[Address, PositionRecords]],
        sync_id: int,
        now: float,
    ) -> None:
        """Split ``snaps`` into messages within the size limit, send them and track their acks."""
        pending = self._pending.setdefault(target, {})
        batches = pack_positions(snaps, self.config.max_message_bytes - 64)
        for part, chunk in enumerate(batches):
            batch_id = self._new_id()
            digests = {pos: self.store.digest(pos, now) for pos, _ in chunk}
            message = StoreMsg(batch_id, sync_id, part, len(batches), tuple(s for _, s in chunk))
            payload = encode(message)
            for pos, digest in digests.items():
                p = pending.get(pos)
                if p is None or p.digest != digest:
                    pending[pos] = PendingPush(0, digest)
                pending[pos].batches += 1
            dest, routed = target
            self._batches[batch_id] = PushBatch(
                dest, routed, digests, payload, now + self.config.push_timeout_s
            )
            self._send(dest, payload, now, not routed)
            self.stats.pushes_sent += 1

    def send_routed(self, records: PositionRecords, now: float) -> None:
        """Push records to whichever node is closest to their position (a get's read repair), resent
        every ``push_timeout_s`` until acknowledged (``push_attempts`` sends), like a routed
        hand-over: the first send may go into a link whose peer died unnoticed, and a repair that
        never lands leaves the position empty until the owner's republish. Nothing is recorded about
        who holds it afterwards: this node is not among the position's holders."""
        batch_id = self._new_id()
        payload = encode(StoreMsg(batch_id, 0, 0, 1, (records,)))
        pos = key_address(records.key, records.index)
        self._batches[batch_id] = PushBatch(pos, True, {}, payload, now + self.config.push_timeout_s)
        self._send(pos, payload, now, False)

    # -- messages -------------------------------------------------------------------------------

    def handle_store(self, src: Address, message: StoreMsg, now: float) -> None:
        """Merge pushed records (each verified by the store), acknowledge, and note what the sender
        holds so that we do not push it back."""
        refused: list[int] = []
        changed: list[Address] = []
        for n, pr in enumerate(message.positions):
            pos = key_address(pr.key, pr.index)
            failed = False
            for held in pr.entries:
                outcome = self.store.write(pos, pr.index, held.record, now, held.remaining)
                failed |= self._count(outcome.status)
            if failed:
                refused.append(n)
            if pos in self.store:
                changed.append(pos)
                live = [h.record for h in pr.entries if h.remaining > 0]
                if src in self.members and digest_of(live) == self.store.digest(pos, now):
                    self._has.setdefault(pos, {})[src] = digest_of(live)
        if message.batch_id:
            self._send(src, encode(StoreAck(message.batch_id, tuple(refused))), now, True)
        if self._syncs.answer(src, message.sync_id, message.part, message.parts):
            log.debug("%s: synced with %s", short(self.me), short(src))
        self.maintain(now, changed)

    def _count(self, status: Status) -> bool:
        """Count a refusal of a pushed record; True when the sender should push it again later."""
        if status is Status.FORGED:
            self.stats.forged += 1
        elif status in (Status.STORE_FULL, Status.KEY_FULL):
            self.stats.refused_full += 1
            return True
        return False

    def handle_ack(self, src: Address, ack: StoreAck, now: float) -> None:
        batch = self._batches.get(ack.batch_id)
        if batch is None or (not batch.routed and src != batch.target):
            return
        del self._batches[ack.batch_id]
        if not batch.positions:
            return  # a read repair (send_routed): landed, nothing to note
        key = (batch.target, batch.routed)
        pending = self._pending.get(key, {})
        refused = set(ack.refused)
        done: list[Address] = []
        for n, (pos, digest) in enumerate(batch.positions.items()):
            p = pending.get(pos)
            if p is None or p.digest != digest:
                continue
            p.batches -= 1
            p.failed |= n in refused
            if p.batches > 0:
                continue
            del pending[pos]
            if p.failed:
                continue  # a full store: pushed again at the next change or resync, not at once
            if self.store.digest(pos, now) != digest:
                done.append(pos)  # it changed while this push was in flight: push the new version
                continue
            desired = self.view.desired(pos)
            if not batch.routed:
                self._has.setdefault(pos, {})[batch.target] = digest
                done.append(pos)
            elif src == self.me:
                self._has.setdefault(pos, {})[self.me] = digest  # routing says we are closest after all
            elif self.me not in desired:
                self._drop(pos, f"handed over to {short(src)} by routing")
            elif desired[0] != self.me and not self.view.in_span(pos):
                self._ask(pos, digest, now)  # it holds our version now: may we let go?
        if not pending:
            self._pending.pop(key, None)
        self.maintain(now, done)

    def handle_role(self, src: Address, role: Role, now: float) -> None:
        """Tell an unsure holder of a position whether we, closest to it, count it as a holder."""
        pos = key_address(role.key, role.index)
        desired = self.view.desired(pos)
        if src == self.me or src in desired:
            verdict = Verdict.NEEDED
        elif not self.view.knows_holders(pos):
            verdict = Verdict.UNKNOWN
        elif pos in self.store and self.store.digest(pos, now) == role.digest:
            verdict = Verdict.UNNEEDED
        else:
            verdict = Verdict.DIFFERS
        self._send(src, encode(RoleReply(role.req_id, verdict)), now, True)

    def handle_role_reply(self, src: Address, reply: RoleReply, now: float) -> None:
        asked = self._roles.pop(reply.req_id, None)
        if asked is None:
            return
        pos, digest, _sent = asked
        if pos not in self.store or self.store.digest(pos, now) != digest or self.view.certain(pos):
            return
        if reply.verdict is Verdict.UNNEEDED:
            self._drop(pos, f"{short(src)}, closest to it, does not count us")
        elif reply.verdict is Verdict.DIFFERS:
            self._queue((pos, True), pos)  # hand our version over; we ask again at the next change
            self._flush(now)

    def handle_digest(self, src: Address, digest: Digest, now: float) -> None:
        """Tell ``src`` which of the positions it listed we hold in its version; it pushes the rest."""
        same = same_versions(self.store, digest, now)
        if src in self.members:
            for _n, pos, version in same:
                self._has.setdefault(pos, {})[src] = version
        self._send(src, encode(DigestReply(digest.req_id, tuple(n for n, _p, _v in same))), now, True)

    def handle_digest_reply(self, src: Address, reply: DigestReply, now: float) -> None:
        answer = self._digests.answered(src, reply)
        if answer is None:
            return
        held, lacking = answer
        for pos, digest in held:
            if pos in self.store and self.store.digest(pos, now) == digest:
                self._has.setdefault(pos, {})[src] = digest
        self.maintain(now, [pos for pos, _d in held] + lacking)

    def handle_sync(self, src: Address, sync: Sync, now: float) -> None:
        """Send ``src`` every position it should hold by our view with it added — at least one
        (possibly empty) part, so that it knows we are done. Pushes to it held back until it asked
        start now: what the answer did not carry is pushed by the maintenance that follows."""
        released = self._syncs.request(src, now)
        snaps = []
        for pos in self.store.positions():
            if self.view.in_span(pos) and src in self.view.desired(pos, extra=src):
                snap = self.store.snapshot(pos, now)
                if snap is not None:
                    snaps.append((pos, snap))
        key = (src, False)
        if snaps:
            self._send_batches(key, snaps, sync.sync_id, now)
        else:
            self._send(src, encode(StoreMsg(0, sync.sync_id, 0, 1, ())), now, True)
        if released:
            self.maintain(now)

    # -- time -----------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        times = [b.resend_at for b in self._batches.values()]
        times += [t for t in (self._syncs.next_deadline(), self._digests.next_deadline()) if t is not None]
        if self._resync_at is not None:
            times.append(self._resync_at)
        return min(times) if times else None

    def _next_resync(self, now: float) -> float:
        return now + self.config.resync_interval_s * (1 - 0.25 * self.rng.random())

    def handle_timer(self, now: float) -> None:
        c = self.config
        if self._resync_at is None:
            self._resync_at = self._next_resync(now)
        for sync_id, peer in self._syncs.resends(now):
            self.stats.sync_resends += 1
            self._send(peer, encode(Sync(sync_id)), now, True)
        silent, late = self._syncs.expire(now)
        if silent or late:
            log.debug("%s: no sync from %s, none asked by %s", short(self.me), _names(silent), _names(late))
        unanswered = [pos for _peer, positions in self._digests.expired(now) for pos in positions]
        if unanswered and not late:
            self.maintain(now, unanswered)
        for batch_id, batch in list(self._batches.items()):
            if batch.resend_at > now:
                continue
            if batch.attempts >= c.push_attempts:
                del self._batches[batch_id]
                pending = self._pending.get((batch.target, batch.routed), {})
                for pos in batch.positions:
                    pending.pop(pos, None)
                if not pending:
                    self._pending.pop((batch.target, batch.routed), None)
                continue
            batch.attempts += 1
            batch.resend_at = now + c.push_timeout_s * batch.attempts
            self._send(batch.target, batch.payload, now, not batch.routed)
            self.stats.pushes_sent += 1
        if self._resync_at <= now:
            self._resync_at = self._next_resync(now)
            self._has.clear()
            self._roles.clear()
            self._resyncing = True
            self.maintain(now)
            self._resyncing = False
        elif late:
            self.maintain(now)

    def sweep(self, now: float) -> None:
        self.store.sweep(now)
        late = now - self.config.push_timeout_s * self.config.push_attempts
        for req_id in [i for i, (_p, _d, sent) in self._roles.items() if sent < late]:
            del self._roles[req_id]
        for pos in [p for p in self._has if p not in self.store]:
            self._forget_position(pos)
        self._syncs.sweep(now)


def _names(addresses: Iterable[Address]) -> str:
    return ",".join(short(a) for a in addresses) or "-"
