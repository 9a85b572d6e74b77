"""Punch sessions: the schedule (pre-punch first, ICE pacing, retransmission, timeout), peer-reflexive
learning, success rules; and whole punches through the real NAT models (the lab's 5 x 5 table, the
conntrack clash, 20 % loss)."""

from __future__ import annotations

import itertools

import pytest

from nat import NatType, PunchConfig, PunchFailed, PunchSession, PunchState, PunchSucceeded, pair_is_punchable

from .punchsim import direct, punch_pair

C1, C2, C3 = ("198.51.100.20", 1000), ("203.0.113.6", 40000), ("192.168.2.2", 40000)


def drain(s: PunchSession, until: float) -> list[tuple[float, tuple[str, int], int]]:
    """Drive a session alone (nobody answers) and record (time, endpoint, ttl) of everything sent."""
    sent: list[tuple[float, tuple[str, int], int]] = []
    now = s.started_at
    while s.state is PunchState.PUNCHING and now <= until:
        s.handle_timer(now)
        sent += [(now, ep, ttl) for ep, ttl in s.probes_due(now)]
        timer = s.get_timer()
        if timer is None:
            break
        assert timer >= now or timer == pytest.approx(now)
        now = max(timer, now + 1e-9)
    return sent


def test_prepunch_goes_first_to_every_candidate_with_low_ttl() -> None:
    s = PunchSession([C1, C2], 10.0)
    first = s.probes_due(10.0)
    assert first == [(C1, 2), (C2, 2)]
    assert s.get_timer() == pytest.approx(10.02)
    assert s.probes_due(10.01) == []
    assert s.probes_due(10.02) == [(C1, 0)]


def test_pacing_ta_and_per_candidate_interval() -> None:
    s = PunchSession([C1, C2, C3], 0.0)
    sent = [x for x in drain(s, 1.0) if x[2] == 0]
    times = [t for t, _, _ in sent]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.05 - 1e-9  # Ta between any two probes
    for c in (C1, C2, C3):
        ct = [t for t, ep, _ in sent if ep == c]
        assert len(ct) >= 5
        assert min(b - a for a, b in itertools.pairwise(ct)) >= 0.15 - 1e-9
        assert max(b - a for a, b in itertools.pairwise(ct)) <= 0.2 + 1e-9
    assert [ep for _, ep, _ in sent[:3]] == [C1, C2, C3]  # ranked order first


def test_every_candidate_is_probed_even_with_many() -> None:
    many = [(f"198.51.100.{i}", 1000) for i in range(8)]
    sent = drain(PunchSession(many, 0.0), 1.0)
    assert {ep for _, ep, ttl in sent if ttl == 0} == set(many)


def test_timeout_fails_with_event() -> None:
    s = PunchSession([C1], 0.0, config=PunchConfig(timeout_s=1.0))
    sent = drain(s, 5.0)
    assert s.state is PunchState.FAILED
    assert max(t for t, _, _ in sent) < 1.0
    event = s.next_event()
    assert isinstance(event, PunchFailed) and event.elapsed == pytest.approx(1.0)
    assert event.probes_sent == s.probes_sent and not event.received_any
    assert s.get_timer() is None and s.probes_due(2.0) == []


def test_no_prepunch_when_disabled() -> None:
    s = PunchSession([C1], 0.0, config=PunchConfig(prepunch_ttl=0))
    assert s.probes_due(0.0) == [(C1, 0)]


def test_hold_delays_full_probes_but_not_the_prepunch() -> None:
    s = PunchSession([C1], 0.0, hold_s=0.3)
    assert s.probes_due(0.0) == [(C1, 2)]
    assert s.get_timer() == pytest.approx(0.32)
    assert s.probes_due(0.2) == []
    assert s.probes_due(0.32) == [(C1, 0)]


def test_an_endless_hold_sends_only_the_prepunch_and_answers_until_released() -> None:
    s = PunchSession([C1], 0.0, hold_s=float("inf"))
    assert s.probes_due(0.0) == [(C1, 2)]
    assert s.get_timer() == pytest.approx(3.0)  # only the deadline
    assert s.probes_due(1.0) == []
    s.probe_received(C1, 1.1)  # the peer's probe is checked back at once, hold or not
    assert s.probes_due(1.1) == [(C1, 0)]
    s.release_hold(1.5)  # our mapping turned out symmetric: probe after all
    assert s.get_timer() == pytest.approx(1.5)
    assert s.probes_due(1.5) == [(C1, 0)]


def test_peer_reflexive_learned_and_probed_at_once() -> None:
    s = PunchSession([C2], 0.0)
    s.probes_due(0.0)
    prflx = ("203.0.113.6", 51234)
    s.probe_received(prflx, 0.005)
    assert s.learned == (prflx,)
    assert s.get_timer() == pytest.approx(0.005)
    assert s.probes_due(0.005) == [(prflx, 0)]  # triggered: no pre-punch, no wait for pacing
    assert s.targets[0] == prflx  # inbound-proven endpoints first
    s.reply_received(prflx, 0.03)
    assert s.state is PunchState.SUCCEEDED and s.endpoint == prflx
    event = s.next_event()
    assert isinstance(event, PunchSucceeded) and event.peer_reflexive and event.elapsed == pytest.approx(0.03)


def test_reply_from_an_unprobed_endpoint_is_not_success_yet() -> None:
    s = PunchSession([C2], 0.0)
    s.probes_due(0.0)
    s.probes_due(0.02)
    other = ("203.0.113.6", 50000)
    s.reply_received(other, 0.03)
    assert s.state is PunchState.PUNCHING and other in s.learned
    assert (other, 0) in s.probes_due(0.03)
    s.reply_received(other, 0.05)
    assert s.state is PunchState.SUCCEEDED and s.endpoint == other


def test_learned_endpoints_are_bounded() -> None:
    s = PunchSession([C1], 0.0, config=PunchConfig(max_targets=4))
    for port in range(100):
        s.probe_received(("203.0.113.99", 2000 + port), 0.01)
    assert len(s.targets) == 4


def test_misuse_raises() -> None:
    with pytest.raises(ValueError):
        PunchConfig(prepunch_ttl=300)
    with pytest.raises(ValueError):
        PunchConfig(pacing_s=0)
    with pytest.raises(ValueError):
        PunchSession([C1], 0.0, hold_s=-1)


# -- whole punches through the NAT models ---------------------------------------------------------------

TYPES = [NatType.FULL, NatType.ADDR, NatType.PORT, NatType.SYM, NatType.SYMR, NatType.PUBLIC]


@pytest.mark.parametrize("kind_a", TYPES)
@pytest.mark.parametrize("kind_b", TYPES)
def test_models_reproduce_the_lab_table(kind_a: NatType, kind_b: NatType) -> None:
    a, b, _ = punch_pair(kind_a, kind_b, seed=1)
    assert direct(a, b) == pair_is_punchable(kind_a, kind_b)
    if not direct(a, b):
        assert a.state is PunchState.FAILED and b.state is PunchState.FAILED


def test_symmetric_peer_is_reached_through_its_peer_reflexive_endpoint() -> None:
    a, b, net = punch_pair(NatType.FULL, NatType.SYM, seed=2)
    assert direct(a, b)
    assert a.endpoint != net.hosts["b"].reflexive  # the sym NAT picked a new port for a
    assert a.endpoint in a.learned


def test_conntrack_clash_deadlocks_without_prepunch_and_is_fixed_by_it() -> None:
    # Routers accept unsolicited input. A probes B's endpoint as soon as it starts; B starts 25 ms
    # earlier, so without a pre-punch B's first probe reaches A's router before A's own flow exists:
    # A's flow is re-mapped and the punch deadlocks (the lab's finding).
    no_prepunch = PunchConfig(prepunch_ttl=0)
    a, b, net = punch_pair("port", "port", 3, router_input_accept=True, config=no_prepunch, skew=0.025)
    assert not direct(a, b)
    nat_a = net.hosts["a"].nat
    assert nat_a is not None and nat_a.remapped >= 1
    # The pre-punch opens A's mapping at A's start, before B's first full probe arrives (after Ta).
    a, b, _ = punch_pair("port", "port", 3, router_input_accept=True, skew=0.025)
    assert direct(a, b)
    # With a skew longer than that, the pre-punch alone is too late...
    a, b, _ = punch_pair("port", "port", 3, router_input_accept=True, skew=0.1)
    assert not direct(a, b)
    # ...unless B holds its full probes for about the signalling delay (its pre-punch goes at once).
    a, b, _ = punch_pair("port", "port", 3, router_input_accept=True, skew=0.1, hold_b=0.15)
    assert direct(a, b)


def test_a_hold_ended_by_the_peers_first_probe_survives_any_signalling_delay() -> None:
    # The NAT grid under load: the answer reached A 0.5 s after B started. Any hold guessed from
    # RTTs is too short then (B's probe takes A's port); a hold that only the requester's own probe
    # ends (the overlay holds 1 s behind an endpoint-independent mapping) keeps the order causal.
    a, b, net = punch_pair("port", "port", 3, router_input_accept=True, skew=0.5, hold_b=0.15)
    assert not direct(a, b)
    a, b, net = punch_pair("port", "port", 3, router_input_accept=True, skew=0.5, hold_b=1.0)
    assert direct(a, b)
    nat_a, nat_b = net.hosts["a"].nat, net.hosts["b"].nat
    assert nat_a is not None and nat_b is not None and nat_a.remapped == nat_b.remapped == 0


@pytest.mark.parametrize("seed", range(20))
def test_twenty_percent_loss_still_punches(seed: int) -> None:
    a, b, _ = punch_pair("port", "port", seed, loss=0.2)
    assert direct(a, b)
    a, b, _ = punch_pair("addr", "sym", seed, loss=0.2)
    assert direct(a, b)


def test_malformed_advertised_candidates_are_skipped() -> None:
    s = PunchSession([("garbage", 1), C1, ("192.0.2.1", -5)], 0.0)
    assert s.targets == (C1,) and s.rejected == 2
