"""Classification of NAT mapping from synthetic observations, filtering from probe results, the
peer-assisted filtering probe, roaming, and the status profile."""

from __future__ import annotations

from random import Random

import pytest

from nat import (
    FilteringBehaviour,
    FilterProbe,
    FilterProbeKind,
    FilterProbeResult,
    MappingBehaviour,
    NatObserver,
    Observation,
    ProbeOutcome,
    choose_helper,
    classify_filtering,
    classify_mapping,
    port_delta,
)

LOCAL = [("192.168.1.2", 40000)]


def obs(dest: tuple[str, int], refl: tuple[str, int], at: float = 0.0) -> Observation:
    return Observation(dest, refl, at)


def test_no_observations_is_unknown() -> None:
    assert classify_mapping([], LOCAL) is MappingBehaviour.UNKNOWN


def test_public_node_is_none() -> None:
    local = [("198.51.100.20", 5000)]
    o = [obs(("198.51.100.10", 1), local[0]), obs(("203.0.113.6", 2), local[0])]
    assert classify_mapping(o, local) is MappingBehaviour.NONE


def test_endpoint_independent_needs_two_destination_addresses() -> None:
    r = ("203.0.113.2", 40000)
    assert classify_mapping([obs(("198.51.100.10", 3478), r)], LOCAL) is MappingBehaviour.UNKNOWN
    same_ip = [obs(("198.51.100.10", 3478), r), obs(("198.51.100.10", 3479), r)]
    assert classify_mapping(same_ip, LOCAL) is MappingBehaviour.UNKNOWN
    two_ips = [obs(("198.51.100.10", 3478), r), obs(("198.51.100.11", 3478), r)]
    assert classify_mapping(two_ips, LOCAL) is MappingBehaviour.ENDPOINT_INDEPENDENT


def test_one_clash_among_many_is_still_endpoint_independent() -> None:
    r = ("203.0.113.2", 40000)
    o = [obs((f"198.51.100.{i}", 4000), r) for i in range(10, 14)]
    o.append(obs(("198.51.100.99", 4000), ("203.0.113.2", 63535)))
    assert classify_mapping(o, LOCAL) is MappingBehaviour.ENDPOINT_INDEPENDENT


def test_address_and_port_dependent() -> None:
    o = [
        obs(("198.51.100.10", 3478), ("203.0.113.2", 50001)),
        obs(("198.51.100.10", 3479), ("203.0.113.2", 50002)),
        obs(("198.51.100.11", 3478), ("203.0.113.2", 50003)),
    ]
    assert classify_mapping(o, LOCAL) is MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT


def test_address_dependent() -> None:
    o = [
        obs(("198.51.100.10", 3478), ("203.0.113.2", 50001)),
        obs(("198.51.100.10", 3479), ("203.0.113.2", 50001)),
        obs(("198.51.100.11", 3478), ("203.0.113.2", 50002)),
    ]
    assert classify_mapping(o, LOCAL) is MappingBehaviour.ADDRESS_DEPENDENT


def test_dependent_without_same_address_pair_is_reported_conservatively() -> None:
    o = [obs(("198.51.100.10", 1), ("203.0.113.2", 50001)), obs(("198.51.100.11", 1), ("203.0.113.2", 50007))]
    assert classify_mapping(o, LOCAL) is MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT


def test_port_delta() -> None:
    seq = [obs((f"198.51.100.{i}", 1), ("203.0.113.2", 50000 + 2 * i), at=i) for i in range(5)]
    assert port_delta(seq) == 2
    rnd = Random(3)
    random_ports = [
        obs((f"198.51.100.{i}", 1), ("203.0.113.2", rnd.randrange(1024, 65535)), i) for i in range(6)
    ]
    assert port_delta(random_ports) is None
    assert port_delta(seq[:2]) is None  # one step is no pattern


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([], FilteringBehaviour.UNKNOWN),
        ([(FilterProbeKind.OTHER_ADDRESS, True)], FilteringBehaviour.ENDPOINT_INDEPENDENT),
        ([(FilterProbeKind.OTHER_ADDRESS, False)], FilteringBehaviour.UNKNOWN),  # one miss may be loss
        (
            [(FilterProbeKind.OTHER_ADDRESS, False), (FilterProbeKind.OTHER_ADDRESS, True)],
            FilteringBehaviour.ENDPOINT_INDEPENDENT,
        ),
        ([(FilterProbeKind.OTHER_ADDRESS, False)] * 2, FilteringBehaviour.ENDPOINT_DEPENDENT),
        (
            [(FilterProbeKind.OTHER_ADDRESS, False)] * 2 + [(FilterProbeKind.OTHER_PORT, True)],
            FilteringBehaviour.ADDRESS_DEPENDENT,
        ),
        (
            [(FilterProbeKind.OTHER_ADDRESS, False)] * 2 + [(FilterProbeKind.OTHER_PORT, False)] * 2,
            FilteringBehaviour.ADDRESS_AND_PORT_DEPENDENT,
        ),
    ],
)
def test_classify_filtering(
    results: list[tuple[FilterProbeKind, bool]], expected: FilteringBehaviour
) -> None:
    assert classify_filtering(FilterProbeResult(k, a) for k, a in results) is expected


def test_filter_probe_arrival_timeout_and_decline() -> None:
    target = ("203.0.113.2", 40000)
    probe = FilterProbe(
        FilterProbeKind.OTHER_ADDRESS, target, ["198.51.100.10"], Random(1), 0.0, timeout_s=3.0
    )
    req = probe.request
    assert req.target == target and req.avoid == ("198.51.100.10",)
    assert not probe.datagram_arrived(req.nonce + 1, ("198.51.100.77", 1), 0.5)  # not our nonce
    assert not probe.datagram_arrived(req.nonce, ("198.51.100.10", 9), 0.5)  # from an address we know
    assert probe.datagram_arrived(req.nonce, ("198.51.100.77", 1), 0.6)
    assert probe.outcome is ProbeOutcome.ARRIVED and probe.get_timer() is None
    assert probe.result == FilterProbeResult(FilterProbeKind.OTHER_ADDRESS, True)

    late = FilterProbe(FilterProbeKind.OTHER_ADDRESS, target, [], Random(2), 0.0, timeout_s=3.0)
    assert late.get_timer() == 3.0
    late.handle_timer(2.9)
    assert late.outcome is ProbeOutcome.WAITING
    late.handle_timer(3.0)
    assert late.result == FilterProbeResult(FilterProbeKind.OTHER_ADDRESS, False)
    assert not late.datagram_arrived(late.nonce, ("198.51.100.77", 1), 3.1)

    declined = FilterProbe(FilterProbeKind.OTHER_PORT, target, [], Random(3), 0.0)
    assert declined.declined(declined.nonce)
    assert declined.result is None and declined.outcome is ProbeOutcome.DECLINED


def test_choose_helper_avoids_known_addresses() -> None:
    probe = FilterProbe(FilterProbeKind.OTHER_ADDRESS, ("203.0.113.2", 4), ["198.51.100.10"], Random(1), 0.0)
    helpers = [
        ("a", ("203.0.113.2", 9)),
        ("b", ("198.51.100.10", 9)),
        ("c", ("198.51.100.30", 9)),
        ("req", ("1.1.1.1", 1)),
    ]
    assert choose_helper(probe.request, helpers, "req", Random(0)) == "c"
    assert choose_helper(probe.request, helpers[:2], "req", Random(0)) is None
    port_probe = FilterProbe(FilterProbeKind.OTHER_PORT, ("203.0.113.2", 4), [], Random(1), 0.0)
    assert choose_helper(port_probe.request, helpers, "req", Random(0)) is None


def test_observer_learns_public_endpoint_and_profile() -> None:
    o = NatObserver(LOCAL)
    events = o.observe(("198.51.100.10", 3478), ("203.0.113.2", 40000), 1.0, peer="srv")
    assert [(e.old, e.new, e.reason) for e in events] == [(None, ("203.0.113.2", 40000), "learned")]
    assert o.observe(("198.51.100.11", 3478), ("203.0.113.2", 40000), 2.0) == []
    o.record_filtering(FilteringBehaviour.ADDRESS_AND_PORT_DEPENDENT)
    profile = o.profile(3.0)
    assert profile.mapping is MappingBehaviour.ENDPOINT_INDEPENDENT
    assert profile.nat_type == "port" and profile.behind_nat
    assert profile.public == (("203.0.113.2", 40000),)
    assert profile.port_preserved is True and profile.observers == 2
    d = profile.as_dict()
    assert d["nat_type"] == "port" and d["public"] == ["203.0.113.2:40000"]


def test_observer_detects_roaming_and_forgets_the_old_mapping() -> None:
    o = NatObserver(LOCAL)
    o.observe(("198.51.100.10", 1), ("203.0.113.2", 40000), 1.0)
    o.observe(("198.51.100.11", 1), ("203.0.113.2", 40000), 1.0)
    events = o.observe(("198.51.100.10", 1), ("203.0.113.66", 40000), 5.0)
    assert [(e.old, e.new, e.reason) for e in events] == [
        (("203.0.113.2", 40000), ("203.0.113.66", 40000), "remapped")
    ]
    assert o.public_endpoints(5.0) == (("203.0.113.66", 40000),)
    assert o.changed_at == 5.0 and o.profile(5.0).mapping is MappingBehaviour.UNKNOWN


def test_observer_local_change_voids_everything() -> None:
    o = NatObserver(LOCAL)
    o.observe(("198.51.100.10", 1), ("203.0.113.2", 40000), 1.0)
    assert o.set_local(LOCAL, 2.0) == []
    events = o.set_local([("10.0.0.7", 40000)], 3.0)
    assert [(e.old, e.new, e.reason) for e in events] == [(("203.0.113.2", 40000), None, "local-changed")]
    assert o.observations(3.0) == []


def test_observer_expires_old_observations_and_bounds_memory() -> None:
    o = NatObserver(LOCAL, max_age_s=100.0, max_observations=8)
    for i in range(20):
        o.observe((f"198.51.100.{i}", 1), ("203.0.113.2", 40000), float(i))
    assert len(o.observations(19.0)) == 8
    assert o.observations(200.0) == []


def test_observer_under_symmetric_nat_reports_dependent_and_delta_quietly() -> None:
    o = NatObserver(LOCAL)
    first = o.observe(("198.51.100.10", 1), ("203.0.113.2", 50000), 0.0)
    assert len(first) == 1
    later = []
    for i in range(1, 5):
        later += o.observe((f"198.51.100.{10 + i}", 1), ("203.0.113.2", 50000 + i), float(i))
    assert later == []  # a new endpoint per destination is no roaming
    profile = o.profile(5.0)
    assert profile.nat_type == "sym" and profile.port_delta == 1
    assert profile.public[0] == ("203.0.113.2", 50004)  # most recent first


def test_malformed_observations_from_peers_are_counted_not_raised() -> None:
    o = NatObserver(LOCAL)
    assert o.observe(("198.51.100.10", 1), ("not an address", 5), 0.0) == []
    assert o.observe(("198.51.100.10", 1), ("203.0.113.2", 70000), 0.0) == []
    assert o.rejected == 2 and o.observations(0.0) == []


def test_keepalive_with_the_same_endpoint_keeps_the_revision_and_mapping() -> None:
    """A refreshed observation that changes nothing the profile reads leaves ``revision`` alone (the
    overlay keeps its ranked candidates); a new endpoint, a remap or an expiry bumps it."""
    o = NatObserver(LOCAL, max_age_s=100.0)
    o.observe(("198.51.100.1", 5800), ("203.0.113.2", 40000), 1.0)
    o.observe(("198.51.100.9", 5800), ("203.0.113.2", 40000), 2.0)
    assert o.mapping(2.0) is MappingBehaviour.ENDPOINT_INDEPENDENT
    rev = o.revision
    for t in (3.0, 4.0, 5.0):
        assert o.observe(("198.51.100.1", 5800), ("203.0.113.2", 40000), t) == []
    assert o.revision == rev
    assert o.mapping(5.0) is MappingBehaviour.ENDPOINT_INDEPENDENT
    assert o.public_endpoints(5.0) == (("203.0.113.2", 40000),)
    o.observe(("198.51.100.20", 5800), ("203.0.113.2", 40001), 6.0)
    assert o.revision > rev
    rev = o.revision
    # The observation from 198.51.100.9 (t=2) is the oldest: it expires first, and that counts.
    o.observe(("198.51.100.1", 5800), ("203.0.113.2", 40000), 103.0)
    assert o.revision > rev
    assert [ob.peer_endpoint for ob in o.observations(103.0)] == [
        ("198.51.100.20", 5800),
        ("198.51.100.1", 5800),
    ]
