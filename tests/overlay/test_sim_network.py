"""The simulated internet between public hosts: latency and jitter, loss, duplication, partitions,
addressing errors and counters. Every run is seeded, so each statistic below is a fixed number for the
seed; the bounds are wide enough (>= 4 sigma) to hold for any seed, so a change of seed cannot turn
these into flaky tests."""

from __future__ import annotations

import statistics
from random import Random

import pytest

from overlay import Drop, LatencyModel, Network, Scheduler, SimHost
from tests.overlay.sim_doubles import Recorder


def make(seed: int = 1, **kwargs: object) -> tuple[Scheduler, Network]:
    scheduler = Scheduler()
    return scheduler, Network(scheduler, Random(seed), **kwargs)  # type: ignore[arg-type]


def public(net: Network, ip: str, port: int = 4000, **kwargs: object) -> tuple[SimHost, Recorder]:
    core = Recorder(**kwargs)  # type: ignore[arg-type]
    return net.add_host(ip, port, core), core


def send_spaced(
    s: Scheduler, host: SimHost, core: Recorder, dest: tuple[str, int], *, count: int, gap: float
) -> None:
    """Send ``count`` numbered datagrams ``gap`` seconds apart, starting now."""
    for i in range(count):

        def go(i: int = i) -> None:
            core.send(i.to_bytes(4, "big"), dest)
            host.poke()

        s.call_later(i * gap, go)


def test_default_latency_is_50ms_plus_minus_5ms_uniform_and_reorders() -> None:
    s, net = make(seed=11)
    a, a_core = public(net, "198.51.100.1")
    _b, b_core = public(net, "198.51.100.2")
    n = 4000
    send_spaced(s, a, a_core, ("198.51.100.2", 4000), count=n, gap=0.001)
    s.run_until(10.0)
    assert len(b_core.received) == n
    delays = [r.at - int.from_bytes(r.data, "big") * 0.001 for r in b_core.received]
    assert min(delays) >= 0.045 - 1e-9 and max(delays) <= 0.055 + 1e-9
    # Uniform on [45, 55] ms: mean 50 ms, standard deviation 10/sqrt(12) = 2.89 ms.
    assert statistics.fmean(delays) == pytest.approx(0.050, abs=0.0002)
    assert statistics.pstdev(delays) == pytest.approx(0.01 / 12**0.5, rel=0.05)
    order = [int.from_bytes(r.data, "big") for r in b_core.received]
    assert order != sorted(order), "1 ms spacing under 10 ms of jitter must reorder some datagrams"
    assert sorted(order) == list(range(n))


def test_latency_model_is_configurable_and_validated() -> None:
    s, net = make(latency=LatencyModel(base=0.2, jitter=0.0))
    a, a_core = public(net, "198.51.100.1")
    _b, b_core = public(net, "198.51.100.2")
    a_core.send(b"x", ("198.51.100.2", 4000))
    a.poke()
    s.run_until(1.0)
    assert [r.at for r in b_core.received] == [pytest.approx(0.2)]
    with pytest.raises(ValueError):
        LatencyModel(base=0.01, jitter=0.02)
    with pytest.raises(ValueError):
        LatencyModel(lan=-1.0)


def test_spread_gives_each_pair_its_own_stable_delay() -> None:
    s, net = make(seed=5, latency=LatencyModel(base=0.02, jitter=0.0, spread=0.2))
    hosts = [public(net, f"198.51.100.{i}") for i in range(1, 7)]
    src, src_core = hosts[0]
    for round_ in range(3):
        for i in range(2, 7):
            src_core.send(bytes([round_]), (f"198.51.100.{i}", 4000))
        src.poke()
        s.run_until(s.now + 1.0)
    per_pair = [sorted({round(r.at % 1.0, 9) for r in core.received}) for _h, core in hosts[1:]]
    assert all(len(times) == 1 for times in per_pair), "no jitter: a pair's delay repeats exactly"
    delays = [times[0] for times in per_pair]
    assert len(set(delays)) == len(delays), "different pairs lie at different distances"
    assert all(0.02 <= d <= 0.22 for d in delays)


def test_random_loss_rate_and_drop_counters() -> None:
    s, net = make(seed=3, loss=0.2)
    a, a_core = public(net, "198.51.100.1")
    _b, b_core = public(net, "198.51.100.2")
    n = 5000
    send_spaced(s, a, a_core, ("198.51.100.2", 4000), count=n, gap=0.0005)
    s.run_until(10.0)
    got = len(b_core.received)
    # Binomial(5000, 0.8): sigma = 28; 4 sigma = 113.
    assert abs(got - 0.8 * n) < 113
    assert a.counters.drops == {Drop.LOSS: n - got}
    assert net.counters.sent == n and net.counters.received == got
    assert net.counters.as_dict()["drop_loss"] == n - got


def test_duplication_rate_and_independent_delays() -> None:
    s, net = make(seed=4, duplicate=0.1)
    a, a_core = public(net, "198.51.100.1")
    _b, b_core = public(net, "198.51.100.2")
    n = 5000
    send_spaced(s, a, a_core, ("198.51.100.2", 4000), count=n, gap=0.0005)
    s.run_until(10.0)
    extra = len(b_core.received) - n
    assert abs(extra - 0.1 * n) < 4 * (n * 0.1 * 0.9) ** 0.5
    assert a.counters.duplicated == extra == net.counters.duplicated
    copies: dict[bytes, list[float]] = {}
    for r in b_core.received:
        copies.setdefault(r.data, []).append(r.at)
    assert {len(v) for v in copies.values()} == {1, 2}
    assert any(v[0] != v[1] for v in copies.values() if len(v) == 2)


def test_per_host_link_loss_affects_only_that_host() -> None:
    s, net = make(seed=2)
    a, a_core = public(net, "198.51.100.1")
    b, b_core = public(net, "198.51.100.2", echo=True)
    c, _c_core = public(net, "198.51.100.3", echo=True)
    b.impair(loss=1.0)
    for dest in (("198.51.100.2", 4000), ("198.51.100.3", 4000)):
        a_core.send(b"hi", dest)
    a.poke()
    s.run_until(1.0)
    assert b_core.received == []
    assert a_core.payloads() == [b"re:hi"]  # from c only
    assert a.counters.drops == {Drop.LOSS: 1}
    with pytest.raises(ValueError):
        c.impair(loss=1.5)
    with pytest.raises(ValueError):
        net.impair(duplicate=-0.1)


def test_partition_cuts_groups_and_the_rest_and_heal_restores() -> None:
    s, net = make()
    hosts = {name: public(net, f"198.51.100.{i}", echo=True) for i, name in enumerate("abcd", start=1)}
    a, a_core = hosts["a"]

    def ping_all() -> list[bytes]:
        a_core.received.clear()
        for i, name in enumerate("bcd", start=2):
            a_core.send(name.encode(), (f"198.51.100.{i}", 4000))
        a.poke()
        s.run_until(s.now + 1.0)
        return sorted(a_core.payloads())

    assert ping_all() == [b"re:b", b"re:c", b"re:d"]
    net.partition([{"198.51.100.1", "198.51.100.2"}, {"198.51.100.3"}])
    assert net.partitioned
    assert ping_all() == [b"re:b"]  # c is another group; d is in "the rest"
    assert a.counters.drops[Drop.PARTITION] == 2
    net.heal()
    assert not net.partitioned
    assert ping_all() == [b"re:b", b"re:c", b"re:d"]
    with pytest.raises(ValueError):
        net.partition([{"198.51.100.1"}, {"198.51.100.1"}])


def test_partition_also_drops_datagrams_already_in_flight() -> None:
    s, net = make()
    a, a_core = public(net, "198.51.100.1")
    _b, b_core = public(net, "198.51.100.2")
    a_core.send(b"x", ("198.51.100.2", 4000))
    a.poke()
    s.run_until(0.01)
    net.partition([{"198.51.100.2"}])
    s.run_until(1.0)
    assert b_core.received == []
    assert a.counters.drops == {Drop.PARTITION: 1}


def test_unroutable_and_unbound_destinations_are_counted() -> None:
    s, net = make()
    a, a_core = public(net, "198.51.100.1")
    public(net, "198.51.100.2")
    a_core.send(b"1", ("203.0.113.99", 4000))  # nobody has this address
    a_core.send(b"2", ("198.51.100.2", 4001))  # address exists, port not bound
    a.poke()
    s.run_until(1.0)
    assert a.counters.drops == {Drop.NO_ROUTE: 1, Drop.NO_LISTENER: 1}
    assert a.counters.sent == 2 and a.counters.sent_bytes == 2


def test_counters_and_trace_digest_track_deliveries() -> None:
    s, net = make()
    a, a_core = public(net, "198.51.100.1")
    b, _b_core = public(net, "198.51.100.2", echo=True)
    empty = net.trace_digest()
    a_core.send(b"hello", ("198.51.100.2", 4000))
    a.poke()
    s.run_until(1.0)
    assert (a.counters.sent, a.counters.sent_bytes, a.counters.received, a.counters.received_bytes) == (
        1,
        5,
        1,
        8,
    )
    assert (b.counters.sent, b.counters.received) == (1, 1)
    assert net.counters.received == 2 and net.counters.dropped == 0
    assert net.trace_digest() != empty
    _s2, untraced = make(trace=False)
    with pytest.raises(RuntimeError):
        untraced.trace_digest()


def test_add_host_refuses_bad_or_conflicting_addresses() -> None:
    _s, net = make()
    public(net, "198.51.100.1")
    with pytest.raises(ValueError):
        public(net, "198.51.100.1")  # already bound
    with pytest.raises(ValueError):
        public(net, "not-an-ip")
    with pytest.raises(ValueError):
        public(net, "198.51.100.9", port=0)
    with pytest.raises(ValueError):
        public(net, "255.255.255.255")
    net.add_host("198.51.100.2", 1, Recorder(), lan="rack")
    with pytest.raises(ValueError):
        net.add_host("198.51.100.2", 2, Recorder(), lan="other-rack")  # one address, one LAN
    two = net.add_host("198.51.100.2", 2, Recorder(), lan="rack")
    assert net.host_at(("198.51.100.2", 2)) is two
    assert [h.endpoint for h in net.hosts] == [
        ("198.51.100.1", 4000),
        ("198.51.100.2", 1),
        ("198.51.100.2", 2),
    ]


@pytest.mark.parametrize(
    "dest",
    [("not-an-address", 4000), ("::1", 4000), ("198.51.100.2", 70000), ("198.51.100.2", -1), ("", 0)],
)
def test_destinations_learned_from_peers_are_dropped_never_raised(dest: tuple[str, int]) -> None:
    """An overlay node may send to any endpoint a peer told it about; nonsense is unroutable."""
    s, net = make()
    a, a_core = public(net, "198.51.100.1")
    public(net, "198.51.100.2")
    a_core.send(b"x", dest)
    a.poke()
    s.run_until(1.0)
    assert a.counters.dropped == 1
    assert set(a.counters.drops) <= {Drop.NO_ROUTE, Drop.NO_LISTENER}
