"""Operation state machines against a scripted host (a test double of the OpHost seam): the phases
of create, roll-back targets, stale answers after a restart, "not ready", timeouts, and gets."""

from __future__ import annotations

from dataclasses import dataclass, field

from dht import AlreadyOwned, Created, DhtConfig, Failed, Kind, OpId, Reason, Record, Values, sign_record
from dht.codec import Get, GetReply, Held, Message, Status, Write, WriteReply
from dht.ops import CreateOp, GetOp, WriteOp
from dht.rtt import ResendTimer
from tests.dht.helpers import identity

ME, OTHER = identity(1), identity(2)


@dataclass
class Host:
    """Records every request; signs with ME and numbers like a node does."""

    config: DhtConfig = field(default_factory=DhtConfig)
    sent: list[tuple[int, Message]] = field(default_factory=list)
    repairs: list[tuple[int, Held]] = field(default_factory=list)
    detours: list[tuple[int, bool]] = field(default_factory=list)
    """(position, detour) of every request, in order."""
    seq: int = 0
    ids: int = 0
    timer: ResendTimer = field(default_factory=lambda: ResendTimer(1.0, 0.3))

    def send_request(
        self, key: bytes, index: int, message: Message, now: float, *, detour: bool = False
    ) -> None:
        self.sent.append((index, message))
        self.detours.append((index, detour))

    def new_id(self) -> int:
        self.ids += 1
        return self.ids

    def sign(self, kind: Kind, key: bytes, value: bytes, ttl: int) -> Record:
        self.seq += 1
        return sign_record(ME, kind, key, value, ttl=ttl, seq=self.seq)

    def observe_seq(self, seq: int) -> None:
        self.seq = max(self.seq, seq)

    def send_repair(self, key: bytes, index: int, held: Held, now: float) -> None:
        self.repairs.append((index, held))

    def resend_timeout(self) -> float:
        return self.timer.timeout()

    def answer_time(self, rtt: float) -> None:
        self.timer.sample(rtt)

    def take(self) -> list[tuple[int, Message]]:
        sent, self.sent = self.sent, []
        return sent


def writes(sent: list[tuple[int, Message]]) -> list[tuple[int, Kind]]:
    return [(i, m.record.kind) for i, m in sent if isinstance(m, Write)]


def answer(op: WriteOp, index: int, status: Status, now: float = 0.1, **kw: object) -> None:
    op.handle_write_reply(WriteReply(op.phase.req_id, index, status, **kw), now)  # type: ignore[arg-type]


def test_create_reserves_then_commits_and_completes_the_rest() -> None:
    host = Host()
    op = CreateOp(host, OpId(1), b"k", b"v", ttl=600, now=0.0)
    assert writes(host.take()) == [(i, Kind.RESERVE) for i in range(8)]
    for i in range(5):
        answer(op, i, Status.OK)
    assert writes(host.take()) == [(i, Kind.CREATE) for i in range(8)]
    for i in range(5):
        answer(op, i, Status.OK, now=0.2)
    assert op.result == Created(b"k", b"v", 600) and not op.finished
    op.handle_timer(1.2)  # the three silent positions are asked again (1 s after the commit began)
    assert writes(host.take()) == [(i, Kind.CREATE) for i in (5, 6, 7)]
    for i in (5, 6, 7):
        answer(op, i, Status.OK, now=1.1)
    assert op.finished


def test_a_won_create_writes_again_where_a_losing_racer_had_reserved() -> None:
    """Five commits win; the three positions that refused for a racer's reservation are asked again
    (the racer rolls back), so the value does not rest on a bare majority that one death breaks."""
    host = Host()
    op = CreateOp(host, OpId(1), b"k", b"v", ttl=600, now=0.0)
    for i in range(5):
        answer(op, i, Status.OK)
    host.take()
    for i in (5, 6, 7):
        answer(op, i, Status.CONFLICT_RESERVED, now=0.2, owner=OTHER.public_key)
    for i in range(5):
        answer(op, i, Status.OK, now=0.2)
    assert op.result == Created(b"k", b"v", 600) and not op.finished
    op.handle_timer(op.next_deadline())
    assert writes(host.take()) == [(i, Kind.CREATE) for i in (5, 6, 7)]
    answer(op, 5, Status.CONFLICT_RESERVED, now=0.6, owner=OTHER.public_key)  # not rolled back yet
    for i in (6, 7):
        answer(op, i, Status.OK, now=0.6)
    op.handle_timer(op.next_deadline())
    assert writes(host.take()) == [(5, Kind.CREATE)]
    answer(op, 5, Status.OK, now=1.0)
    assert op.finished


def test_a_failed_write_does_not_ask_the_reserved_positions_again() -> None:
    host = Host()
    op = WriteOp(host, OpId(1), host.sign(Kind.PUT, b"k", b"v", 600), 0.0)
    host.take()
    for i in range(4):
        answer(op, i, Status.CONFLICT_RESERVED, owner=OTHER.public_key)
    assert isinstance(op.result, Failed) and op.finished
    assert host.take() == []


def test_resends_wait_for_the_measured_answer_time_not_a_fixed_second() -> None:
    """A node whose answers come back in about 0.1 s resends to a silent position after the floor
    (0.3 s), then 0.6 s, instead of after 1 s and 2 s."""
    host = Host()
    first = GetOp(host, OpId(1), b"k", 0.0)
    for i in range(8):
        first.handle_get_reply(GetReply(first.phase.req_id, i, b"k", 0, 1, True, ()), 0.1)
    assert host.timer.samples == 8 and host.resend_timeout() == 0.3
    host.take()
    op = GetOp(host, OpId(2), b"k", 10.0)
    host.take()
    for i in range(7):  # four hold a value, three do not: the eighth decides it
        entries = (held(),) if i < 4 else ()
        op.handle_get_reply(GetReply(op.phase.req_id, i, b"k", 0, 1, True, entries), 10.1)
    assert op.result is None and op.next_deadline() == 10.3
    op.handle_timer(10.3)
    assert [i for i, _ in host.take()] == [7]
    assert op.next_deadline() == 10.3 + 0.6
    op.handle_get_reply(GetReply(op.phase.req_id, 7, b"k", 0, 1, True, (held(),)), 10.5)
    assert op.result is not None and len(op.result.values) == 1  # type: ignore[union-attr]
    assert host.timer.samples == 8 + 7, "an answer to a resent request is no sample (Karn)"


def test_a_lost_race_rolls_back_where_it_may_hold_and_nowhere_else() -> None:
    host = Host()
    op = CreateOp(host, OpId(1), b"k", b"v", ttl=600, now=0.0)
    host.take()
    for i in (0, 1):
        answer(op, i, Status.OK)
    for i in (2, 3, 4):
        answer(op, i, Status.CONFLICT_RESERVED, owner=OTHER.public_key)
    assert op.result is None  # 2 accepted + 3 open could still make 5
    answer(op, 5, Status.CONFLICT_RESERVED, owner=OTHER.public_key)
    assert isinstance(op.result, Failed) and op.result.reason is Reason.CONTENDED
    assert writes(host.take()) == [(0, Kind.DELETE), (1, Kind.DELETE)]
    answer(op, 6, Status.OK, now=0.5)  # accepted after we gave up: roll it back too
    assert writes(host.take()) == [(6, Kind.DELETE)]
    op.handle_timer(op.phase.deadline)  # position 7 never answered: its answer may have been lost
    assert writes(host.take()) == [(7, Kind.DELETE)]
    assert op.finished


def test_a_taken_key_names_its_owner() -> None:
    host = Host()
    op = CreateOp(host, OpId(1), b"k", b"v", ttl=600, now=0.0)
    for i in range(4):
        answer(op, i, Status.CONFLICT_CREATED, owner=OTHER.public_key)
    assert op.result == AlreadyOwned(b"k", OTHER.public_key)


def test_silence_is_failure_never_success() -> None:
    host = Host()
    op = CreateOp(host, OpId(1), b"k", b"v", ttl=600, now=0.0)
    for i in range(4):
        answer(op, i, Status.OK)
    t = 0.0
    while not op.finished:
        t = op.next_deadline()
        op.handle_timer(t)
    assert isinstance(op.result, Failed) and op.result.reason is Reason.NO_QUORUM
    assert t <= DhtConfig().op_timeout_s
    sent = writes(host.take())
    assert sent.count((4, Kind.RESERVE)) == DhtConfig().request_attempts
    assert sorted(i for i, k in sent if k is Kind.DELETE) == list(range(8))


def test_a_renewal_that_fails_does_not_delete_what_the_owner_held() -> None:
    host = Host()
    op = CreateOp(host, OpId(1), b"k", b"v", ttl=600, now=0.0)
    answer(op, 0, Status.OK_HELD)
    for i in range(1, 5):
        answer(op, i, Status.CONFLICT_CREATED, owner=OTHER.public_key)
    host.take()
    assert op.result == AlreadyOwned(b"k", OTHER.public_key) and op.finished


def test_stale_answers_renumber_once_and_resend() -> None:
    host = Host()
    op = WriteOp(host, OpId(1), host.sign(Kind.PUT, b"k", b"v", 600), 0.0)
    host.take()
    answer(op, 0, Status.STALE, seq=41)
    (index, message) = host.take()[0]
    assert index == 0 and isinstance(message, Write) and message.record.seq == 42
    answer(op, 1, Status.STALE, seq=41)  # answers the first record: resend the new one, no renumbering
    (index, message) = host.take()[0]
    assert index == 1 and message.record.seq == 42 and host.seq == 42


def test_not_ready_is_asked_again_without_spending_attempts() -> None:
    host = Host(DhtConfig(request_attempts=1))
    op = WriteOp(host, OpId(1), host.sign(Kind.PUT, b"k", b"v", 600), 0.0)
    host.take()
    answer(op, 0, Status.NOT_READY, now=0.1)
    op.handle_timer(0.1 + DhtConfig().not_ready_retry_s)
    assert [i for i, _ in host.take()] == [0]


def held(seq: int = 1, kind: Kind = Kind.PUT) -> Held:
    return Held(sign_record(OTHER, kind, b"k", b"v", ttl=600, seq=seq), 500.0)


def reply(
    op: GetOp, index: int, entries: list[Held], *, ready: bool = True, part: int = 0, parts: int = 1
) -> None:
    op.handle_get_reply(GetReply(op.phase.req_id, index, b"k", part, parts, ready, tuple(entries)), 0.2)


def test_get_decides_after_five_answers_and_repairs_the_late_ones() -> None:
    host = Host()
    op = GetOp(host, OpId(1), b"k", 0.0)
    assert [type(m) for _, m in host.take()] == [Get] * 8
    for i in range(5):
        reply(op, i, [held()])
    assert isinstance(op.result, Values) and [v.value for v in op.result.values] == [b"v"]
    assert not op.finished and host.repairs == []
    reply(op, 5, [])
    reply(op, 6, [held(seq=0)])
    assert [i for i, _ in host.repairs] == [5, 6]
    op.handle_timer(1.5)
    assert [i for i, _ in host.take()] == [7]  # decided, but the silent one is still asked
    reply(op, 7, [held()])
    assert op.finished and [i for i, _ in host.repairs] == [5, 6]


def test_a_decided_get_asks_a_silent_position_again_and_repairs_it_when_it_answers_empty() -> None:
    """Five positions agree, so the get is decided; the request to a sixth went into a link whose peer
    had died unnoticed, and that position, emptied by a crash, is only known to need the value once it
    answers. Resends after the decision reach it (the overlay routes around the dead peer once its
    probe goes unanswered) and its empty answer gets the read repair. Before, a decided get sent
    nothing more: on the simulated overlay (tests/dht/test_sim_ops.py, seed 11) that position stayed
    empty until the owner's republish, 40 s later."""
    host = Host()
    op = GetOp(host, OpId(1), b"k", 0.0)
    host.take()
    for i in range(5):
        reply(op, i, [held()])
    for i in (6, 7):
        reply(op, i, [held()])
    assert isinstance(op.result, Values) and not op.finished
    asked: list[int] = []
    while not asked:
        when = op.next_deadline()
        assert when < op.phase.deadline, "no resend scheduled for the silent position"
        op.handle_timer(when)
        asked = [i for i, m in host.take() if isinstance(m, Get)]
    assert asked == [5] and when <= 1.0
    op.handle_get_reply(GetReply(op.phase.req_id, 5, b"k", 0, 1, True, ()), when + 0.1)
    assert [i for i, _ in host.repairs] == [5] and op.finished


def test_get_assembles_parts_and_treats_not_ready_as_provisional() -> None:
    host = Host()
    op = GetOp(host, OpId(1), b"k", 0.0)
    host.take()
    reply(op, 0, [held()], part=0, parts=2)
    reply(op, 0, [], part=1, parts=2)
    for i in range(1, 4):
        reply(op, i, [held()])
    for i in range(4, 8):
        reply(op, i, [held()], ready=False)  # not ready: asked again shortly
    assert op.result is None
    while not op.finished:
        op.handle_timer(op.next_deadline())
    assert (
        isinstance(op.result, Values) and len(op.result.values) == 1
    )  # provisional answers count at the end


def test_get_without_enough_answers_is_no_quorum() -> None:
    host = Host()
    op = GetOp(host, OpId(1), b"k", 0.0)
    for i in range(3):
        reply(op, i, [])
    while not op.finished:
        op.handle_timer(op.next_deadline())
    assert isinstance(op.result, Failed) and op.result.reason is Reason.NO_QUORUM


def test_get_with_a_value_held_by_four_and_four_silent_is_no_quorum_not_absence() -> None:
    """Four positions hold the value and four never answer: a majority neither confirms nor rules it
    out, so the get fails rather than report the key empty (found on the simulated overlay, with the
    holders of three positions dead and routing into the gap they left)."""
    host = Host()
    op = GetOp(host, OpId(1), b"k", 0.0)
    for i in range(4):
        reply(op, i, [held()])
    while not op.finished:
        op.handle_timer(op.next_deadline())
    assert isinstance(op.result, Failed) and op.result.reason is Reason.NO_QUORUM
    assert "undecided" in op.result.detail


def test_get_with_four_empty_answers_and_four_silent_says_absent() -> None:
    host = Host()
    op = GetOp(host, OpId(1), b"k", 0.0)
    for i in range(4):
        reply(op, i, [])
    while not op.finished:
        op.handle_timer(op.next_deadline())
    assert isinstance(op.result, Values) and op.result.values == ()


def test_fast_resends_still_reach_as_late_as_the_fixed_schedule() -> None:
    """With a measured wait of 0.3 s a silent position is asked at 0, 0.3, 0.9 and 2.1 s: early
    resends are added, but the last one still comes about as late as the fixed 0, 1, 3 s schedule's,
    when a route broken by a dead link has had time to heal."""
    host = Host()
    for _ in range(20):
        host.timer.sample(0.05)
    op = GetOp(host, OpId(1), b"k", 0.0)
    sends = [0.0]
    host.take()
    while not op.finished:
        t = op.next_deadline()
        op.handle_timer(t)
        sends += [t] * sum(i == 7 for i, _ in host.take())
    assert [round(t, 3) for t in sends] == [0.0, 0.3, 0.9, 2.1]
    assert isinstance(op.result, Failed)


def test_every_second_send_of_a_position_takes_the_detour() -> None:
    """A silent position's first request may have died in a dead first hop: its second send asks the
    overlay for another first hop, its third goes the greedy way again (the overlay suspects a dead
    peer by then), and answered positions are not asked again at all."""
    host = Host()
    op = GetOp(host, OpId(1), b"k", now=0.0)
    assert host.detours == [(i, False) for i in range(8)]
    for i in range(7):
        op.handle_get_reply(GetReply(op.phase.req_id, i, b"k", 0, 1, True, ()), 0.1)
    host.detours.clear()
    now = 0.0
    while len(host.detours) < 2 and now < op.phase.deadline:
        now += 0.05
        op.handle_timer(now)
    assert host.detours == [(7, True), (7, False)]
