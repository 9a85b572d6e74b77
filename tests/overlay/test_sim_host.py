"""How a simulated host drives its core: timers armed only when they change, poke, after_activity, and
a crash (remove_host) that takes timers and in-flight datagrams with it."""

from __future__ import annotations

from random import Random

import pytest

from overlay import Drop, Network, Scheduler, SimHost
from tests.overlay.sim_doubles import Recorder

A = ("198.51.100.1", 4000)
B = ("198.51.100.2", 4000)


def make() -> tuple[Scheduler, Network]:
    scheduler = Scheduler()
    return scheduler, Network(scheduler, Random(1))


def test_add_host_starts_the_core_sends_its_queue_and_arms_its_timer() -> None:
    s, net = make()
    b_core = Recorder()
    net.add_host(*B, b_core)
    a_core = Recorder()
    a_core.send(b"hello at start", B)
    a_core.deadline = 2.5
    a = net.add_host(*A, a_core)
    assert a.timer == 2.5
    s.run_until(3.0)
    assert b_core.payloads() == [b"hello at start"]
    assert a_core.fired == [2.5]
    assert a.timer is None  # the core disarmed (on_timer_deadline is None)


def test_a_periodic_timer_fires_on_time_and_each_firing_sees_its_deadline() -> None:
    s, net = make()

    class Periodic(Recorder):
        def handle_timer(self, now: float) -> None:
            super().handle_timer(now)
            self.deadline = now + 1.5

    core = Periodic()
    core.deadline = 1.0
    net.add_host(*A, core)
    s.run_until(7.0)
    assert core.fired == [1.0, 2.5, 4.0, 5.5, 7.0]


def test_the_timer_is_rearmed_only_when_the_deadline_changes() -> None:
    s, net = make()
    core = Recorder()
    core.deadline = 100.0
    net.add_host(*A, core)
    sender_core = Recorder()
    sender = net.add_host(*B, sender_core)
    for i in range(200):
        sender_core.send(bytes([i % 256]), A)
    sender.poke()
    before = s.pending
    s.run_until(1.0)
    assert len(core.received) == 200
    assert s.pending == before - 200  # 200 deliveries left the heap; no timer entry was added
    core.deadline = 50.0  # the core moves its deadline: one new entry, the old one goes stale
    sender_core.send(b"x", A)
    sender.poke()
    s.run_until(60.0)
    assert core.fired == [50.0]
    s.run_until(200.0)
    assert core.fired == [50.0], "the stale entry for 100.0 must not fire"


def test_a_deadline_in_the_past_fires_now() -> None:
    s, net = make()
    s.run_until(10.0)
    core = Recorder()
    core.deadline = 3.0
    net.add_host(*A, core)
    s.run_until(10.0)
    assert core.fired == [10.0]


def test_poke_flushes_what_the_owner_asked_the_core_to_send() -> None:
    s, net = make()
    a_core, b_core = Recorder(), Recorder()
    a = net.add_host(*A, a_core)
    net.add_host(*B, b_core)
    a_core.send(b"one", B)
    s.run_until(1.0)
    assert b_core.received == [], "nothing leaves until the owner pokes"
    a.poke()
    a_core.deadline = 5.0
    s.run_until(2.0)
    assert b_core.payloads() == [b"one"]
    assert a.timer is None, "the deadline was set after the poke"
    a.poke()
    assert a.timer == 5.0


def test_after_activity_runs_after_every_core_call_and_its_sends_are_flushed() -> None:
    s, net = make()
    calls: list[tuple[str, float]] = []
    b_core = Recorder(echo=True)
    net.add_host(*B, b_core)
    a_core = Recorder()
    a_core.deadline = 1.0

    def upper_layer(host: SimHost) -> None:
        """A stand-in for a DHT stacked on the core: reacts to what arrived by sending more."""
        calls.append((f"{len(a_core.received)} received, {len(a_core.fired)} fired", s.now))
        if a_core.fired and not a_core.received and not a_core.outbox:
            a_core.send(b"query", B)
        host.poke()  # ignored inside a settle; the settle under way flushes

    net.add_host(*A, a_core, after_activity=upper_layer)
    s.run_until(2.0)
    assert calls[0] == ("0 received, 0 fired", 0.0)  # at start
    assert calls[1] == ("0 received, 1 fired", 1.0)  # after the timer
    assert calls[2][0] == "1 received, 1 fired"  # after the echo
    assert a_core.payloads() == [b"re:query"]


def test_remove_host_drops_its_timers_and_datagrams_in_flight_to_it() -> None:
    s, net = make()
    a_core, b_core = Recorder(), Recorder()
    a = net.add_host(*A, a_core)
    b_core.deadline = 0.5
    b = net.add_host(*B, b_core)
    a_core.send(b"to-b", B)
    a.poke()
    b_core.send(b"to-a", A)
    b.poke()
    s.run_until(0.01)  # both datagrams are in flight (50 ms)
    net.remove_host(b)
    assert not b.alive and b.timer is None
    s.run_until(2.0)
    assert b_core.received == [] and b_core.fired == []
    assert a.counters.drops == {Drop.NO_ROUTE: 1}  # the crashed host was the address's only binding
    assert a_core.payloads() == [b"to-a"], "what the crashed host sent before is still on the wire"
    assert net.hosts == [a]
    with pytest.raises(RuntimeError):
        b.poke()
    with pytest.raises(ValueError):
        net.remove_host(b)
    # The address can be used again, by a fresh host.
    fresh = Recorder()
    net.add_host(*B, fresh)
    a_core.send(b"again", B)
    a.poke()
    s.run_until(3.0)
    assert fresh.payloads() == [b"again"]


def test_after_activity_may_crash_its_host_and_nothing_more_is_sent() -> None:
    s, net = make()
    b_core = Recorder()
    net.add_host(*B, b_core)
    a_core = Recorder()
    a_core.deadline = 1.0

    def crash_on_timer(host: SimHost) -> None:
        if a_core.fired:
            a_core.send(b"last words", B)
            net.remove_host(host)

    net.add_host(*A, a_core, after_activity=crash_on_timer)
    s.run_until(5.0)
    assert b_core.received == []
    assert a_core.fired == [1.0]


def test_a_core_that_rearms_at_now_after_its_timer_is_a_loud_error() -> None:
    s, net = make()

    class Stuck(Recorder):
        def handle_timer(self, now: float) -> None:
            super().handle_timer(now)
            self.deadline = now

    core = Stuck()
    core.deadline = 1.0
    net.add_host(*A, core)
    with pytest.raises(RuntimeError, match="spin"):
        s.run_until(2.0)
