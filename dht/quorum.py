"""Pure. Quorum decisions: when a write has succeeded or can no longer succeed, which values a get may
return, when it may return early, and which replicas a read repair must fix.

A key has R positions; a majority M of them must agree. Each position answers once per phase (a
replica that did not answer in time is "open" until the phase gives up on it).

Writes. Success as soon as M positions accepted; failure as soon as the accepted ones plus the open
ones cannot reach M any more. Nothing in between is reported: an ambiguous outcome (some answers lost)
is decided only when it is no longer ambiguous, and a phase that times out undecided is a failure —
``create`` errs on the side of failure, never on the side of two owners.

Reads. A value (one owner's one value) is *confirmed* when M answered positions hold it live and no
answer holds a tombstone as new as it; *rejected* when a newer tombstone exists or when its holders plus
the open positions cannot reach M. A get is complete when every value seen is decided *and* fewer than
M positions are open — then no value unseen so far could still be confirmed. With consistent replicas
a get therefore returns after the fifth answer of eight, not the slowest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from .codec import Held, Status
from .events import AlreadyOwned, Failed, OpResult, Reason, ValueInfo
from .record import Kind

Ident = tuple[bytes, bytes]


def write_decision(accepted: int, open_: int, majority: int) -> bool | None:
    """True: the write succeeded; False: it cannot; None: not decided yet."""
    if accepted >= majority:
        return True
    if accepted + open_ < majority:
        return False
    return None


def write_failure(
    key: bytes, refusals: Sequence[tuple[Status, bytes]], answered: int, replicas: int
) -> OpResult:
    """The result that explains a failed write from the refusals it collected: another owner first,
    then contention and limits, and otherwise missing answers."""
    statuses = Counter(s for s, _ in refusals)
    owners = Counter(o for s, o in refusals if s in (Status.CONFLICT_CREATED, Status.CONFLICT_PUT) and o)
    if owners:
        return AlreadyOwned(key, owners.most_common(1)[0][0])
    if statuses[Status.CONFLICT_RESERVED]:
        n = statuses[Status.CONFLICT_RESERVED]
        return Failed(Reason.CONTENDED, f"{n} of {replicas} positions hold another creator's reservation")
    for status, reason in (
        (Status.KEY_FULL, Reason.KEY_FULL),
        (Status.STORE_FULL, Reason.STORE_FULL),
    ):
        if statuses[status]:
            return Failed(reason, f"{statuses[status]} of {replicas} positions refused: {status.name}")
    if statuses:
        detail = ", ".join(f"{s.name} x{n}" for s, n in sorted(statuses.items()))
        return Failed(Reason.REFUSED, f"refused by replicas: {detail}")
    return Failed(Reason.NO_QUORUM, f"only {answered} of {replicas} positions answered")


class GetTally:
    """The answers of a get, one complete answer per position index."""

    def __init__(self, key: bytes, replicas: int, majority: int) -> None:
        self.key = key
        self.replicas = replicas
        self.majority = majority
        self.answers: dict[int, dict[Ident, Held]] = {}

    def answer(self, index: int, entries: Sequence[Held]) -> None:
        table: dict[Ident, Held] = {}
        for held in entries:
            r = held.record
            if r.key != self.key or r.kind is Kind.RESERVE:
                continue
            current = table.get(r.ident)
            if current is None or r.seq > current.record.seq:
                table[r.ident] = held
        self.answers[index] = table

    def _idents(self) -> list[Ident]:
        seen: dict[Ident, None] = {}
        for table in self.answers.values():
            seen.update(dict.fromkeys(table))
        return list(seen)

    def _state(self, ident: Ident) -> tuple[int, list[Held], Held | None]:
        """(newest tombstone seq or -1, live holdings newer than it, newest tombstone)."""
        tomb_seq, tomb = -1, None
        for table in self.answers.values():
            h = table.get(ident)
            if h is not None and h.record.kind is Kind.DELETE and h.record.seq > tomb_seq:
                tomb_seq, tomb = h.record.seq, h
        live = [
            h
            for table in self.answers.values()
            if (h := table.get(ident)) is not None
            and h.record.kind.is_value
            and h.record.seq > tomb_seq
            and h.remaining > 0
        ]
        return tomb_seq, live, tomb

    def _confirmed(self, live: Sequence[Held]) -> bool:
        return len(live) >= self.majority

    def complete(self, open_: int) -> bool:
        """True when the answers so far decide the get (see the module docstring)."""
        if open_ >= self.majority:
            return False
        for ident in self._idents():
            _tomb_seq, live, _ = self._state(ident)
            if not self._confirmed(live) and len(live) + open_ >= self.majority:
                return False
        return True

    def enough_answers(self) -> bool:
        """Whether absence can be trusted: with fewer answers than R - M + 1 an unseen value might still
        be held by a majority, so "no values" would be a guess."""
        return len(self.answers) > self.replicas - self.majority

    def values(self) -> tuple[ValueInfo, ...]:
        found = []
        for ident in self._idents():
            _tomb_seq, live, _ = self._state(ident)
            if not self._confirmed(live):
                continue
            newest = max(live, key=lambda h: h.record.seq).record
            ttl = sorted((h.remaining for h in live), reverse=True)[self.majority - 1]
            found.append(ValueInfo(newest.value, newest.owner, ttl, newest.kind))
        return tuple(sorted(found, key=lambda v: (v.value, v.owner)))

    def repairs(self) -> list[tuple[int, Held]]:
        """(position index, record to send) for every answered position that lacks the newest version
        of a confirmed value, or still holds a value that a newer tombstone deleted."""
        out: list[tuple[int, Held]] = []
        for ident in self._idents():
            tomb_seq, live, tomb = self._state(ident)
            if self._confirmed(live):
                newest = max(live, key=lambda h: h.record.seq).record
                ttl = sorted((h.remaining for h in live), reverse=True)[self.majority - 1]
                for index, table in self.answers.items():
                    h = table.get(ident)
                    if h is None or h.record.seq < newest.seq:
                        out.append((index, Held(newest, ttl)))
            elif tomb is not None:
                for index, table in self.answers.items():
                    h = table.get(ident)
                    if h is not None and h.record.kind.is_value and h.record.seq < tomb_seq:
                        out.append((index, tomb))
        return sorted(out, key=lambda p: p[0])


def answered_entries(parts: Mapping[int, Sequence[Held]]) -> list[Held]:
    """The entries of a multi-part answer, in part order."""
    return [h for i in sorted(parts) for h in parts[i]]
