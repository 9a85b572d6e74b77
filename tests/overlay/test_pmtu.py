"""Path MTU discovery against a simulated path (a size limit, a round-trip time, seeded loss, an
optional local interface that refuses big datagrams): it finds the limit, never exceeds it once
searching, survives loss, and recovers when the path shrinks, grows, black-holes or moves."""

from __future__ import annotations

from dataclasses import dataclass, field
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay import PathMtu, PmtuConfig, PmtuState
from overlay.pmtu import TRANSITIONS

ETH = 1500 - 28


@dataclass
class Path:
    limit: int
    rtt: float = 0.01
    loss: float = 0.0
    local_mtu: int | None = None
    rng: Random = field(default_factory=lambda: Random(1))
    sent: list[int] = field(default_factory=list)
    violations: int = 0

    def run(self, pmtu: PathMtu, start: float, until: float) -> float:
        """Drive ``pmtu`` from ``start`` to ``until``: send its probes, deliver acks of those that fit,
        fire its timers. Returns the time of the last event."""
        now = start
        pending: list[tuple[float, int]] = []
        while True:
            for size in pmtu.probes(now):
                self.sent.append(size)
                if self.local_mtu is not None and size > self.local_mtu:
                    pmtu.packet_too_big(self.local_mtu, now)  # EMSGSIZE from our own kernel
                    continue
                if size <= self.limit and self.rng.random() >= self.loss:
                    pending.append((now + self.rtt, size))
            if pmtu.state in (PmtuState.SEARCHING, PmtuState.COMPLETE) and pmtu.mtu > self.limit:
                self.violations += 1
            timer = pmtu.get_timer()
            times = [t for t, _ in pending] + ([timer] if timer is not None else [])
            if not times or min(times) > until:
                return now
            now = max(now, min(times))
            for item in [p for p in pending if p[0] <= now]:
                pending.remove(item)
                pmtu.probe_acked(item[1], now)
            if timer is not None and timer <= now:
                pmtu.handle_timer(now)


def test_finds_ethernet_in_two_round_trips_and_completes() -> None:
    pmtu, path = PathMtu(), Path(ETH)
    path.run(pmtu, 0.0, 0.025)  # the base, then one round of larger sizes
    assert pmtu.mtu == ETH and pmtu.state is PmtuState.SEARCHING
    path.run(pmtu, 0.025, 30.0)
    assert pmtu.state is PmtuState.COMPLETE and pmtu.mtu == ETH and path.violations == 0
    assert pmtu.high < 2000


def test_finds_a_65535_byte_path_at_once() -> None:
    pmtu, path = PathMtu(), Path(65535 - 28)
    path.run(pmtu, 0.0, 0.05)
    assert pmtu.mtu == 65507 and pmtu.state is PmtuState.COMPLETE


def test_refines_an_odd_path_by_halving_the_gap() -> None:
    pmtu, path = PathMtu(), Path(1337 - 28)
    path.run(pmtu, 0.0, 60.0)
    assert pmtu.state is PmtuState.COMPLETE
    assert 1309 - PmtuConfig().min_step <= pmtu.mtu <= 1309 and path.violations == 0


def test_loss_delays_but_never_shrinks_below_the_path() -> None:
    pmtu, path = PathMtu(), Path(ETH, loss=0.25, rng=Random(5))
    path.run(pmtu, 0.0, 120.0)
    assert pmtu.mtu == ETH and pmtu.state is PmtuState.COMPLETE and path.violations == 0


def test_local_interface_refusal_shrinks_the_bound_at_once() -> None:
    pmtu, path = PathMtu(), Path(65507, local_mtu=ETH)
    path.run(pmtu, 0.0, 0.05)
    assert pmtu.mtu == ETH and pmtu.high == ETH and pmtu.state is PmtuState.COMPLETE


def test_packet_too_big_on_a_complete_path() -> None:
    pmtu, path = PathMtu(), Path(65507)
    path.run(pmtu, 0.0, 1.0)
    assert pmtu.mtu == 65507
    path.limit = 9000 - 28
    pmtu.packet_too_big(9000 - 28, 1.0)  # an ICMP report
    assert pmtu.mtu == 8972 and pmtu.state is PmtuState.COMPLETE
    pmtu.packet_too_big(20000, 1.0)  # larger than the bound: ignored
    assert pmtu.high == 8972


def test_black_hole_falls_back_to_base_and_searches_again() -> None:
    pmtu, path = PathMtu(), Path(9000 - 28)
    path.run(pmtu, 0.0, 10.0)
    assert pmtu.mtu == 8972
    path.limit = ETH  # the path shrinks silently: no ICMP
    pmtu.black_hole(10.0)
    assert pmtu.state is PmtuState.BASE and pmtu.mtu == PmtuConfig().base
    path.run(pmtu, 10.0, 40.0)
    assert pmtu.mtu == ETH and pmtu.state is PmtuState.COMPLETE


def test_endpoint_change_forgets_the_old_path() -> None:
    pmtu, path = PathMtu(), Path(65507)
    path.run(pmtu, 0.0, 1.0)
    pmtu.endpoint_changed(1.0)
    assert pmtu.state is PmtuState.BASE and pmtu.mtu == PmtuConfig().base and pmtu.high == 65507
    path.limit = ETH
    path.run(pmtu, 1.0, 30.0)
    assert pmtu.mtu == ETH


def test_a_grown_path_is_found_after_the_raise_interval() -> None:
    pmtu, path = PathMtu(), Path(ETH)
    path.run(pmtu, 0.0, 30.0)
    assert pmtu.state is PmtuState.COMPLETE and pmtu.get_timer() == pytest.approx(pmtu.get_timer())
    path.limit = 9000 - 28
    path.run(pmtu, 30.0, 599.0)
    assert pmtu.mtu == ETH  # nothing probed while complete
    path.run(pmtu, 599.0, 700.0)
    assert pmtu.mtu == 8972


def test_a_path_below_base_ends_in_error_and_recovers() -> None:
    pmtu, path = PathMtu(), Path(1000)
    path.run(pmtu, 0.0, 3.5)
    assert pmtu.state is PmtuState.ERROR and pmtu.mtu == PmtuConfig().min_size
    path.limit = ETH
    path.run(pmtu, 3.5, 40.0)
    assert pmtu.state is PmtuState.COMPLETE and pmtu.mtu == ETH


def test_a_reported_small_path_is_used_without_probing_base() -> None:
    pmtu, path = PathMtu(), Path(1000)
    pmtu.packet_too_big(1000, 0.0)
    assert pmtu.mtu == 1000
    path.run(pmtu, 0.0, 5.0)
    assert pmtu.state is PmtuState.COMPLETE and pmtu.mtu == 1000


@settings(max_examples=80, deadline=None)
@given(
    limit=st.integers(PmtuConfig().base, 65507),
    loss=st.sampled_from([0.0, 0.1, 0.3]),
    seed=st.integers(0, 1000),
)
def test_property_never_above_the_path_and_close_to_it(limit: int, loss: float, seed: int) -> None:
    pmtu, path = PathMtu(), Path(limit, loss=loss, rng=Random(seed))
    path.run(pmtu, 0.0, 300.0)
    assert path.violations == 0
    if loss == 0.0:
        assert pmtu.state is PmtuState.COMPLETE
        assert limit - PmtuConfig().min_step <= pmtu.mtu <= limit
    assert len(path.sent) < 400


def test_the_table_covers_every_state_and_config_is_checked() -> None:
    assert {s for s, _ in TRANSITIONS} == set(PmtuState)
    with pytest.raises(ValueError):
        PmtuConfig(base=100, min_size=548)
    with pytest.raises(ValueError):
        PmtuConfig(max_probes=0)
