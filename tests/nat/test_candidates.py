"""Candidates: RFC 8445 priorities, gathering with prediction, ranking."""

from __future__ import annotations

import pytest

from nat import (
    CandidateKind,
    FilteringBehaviour,
    MappingBehaviour,
    NatProfile,
    endpoints,
    gather,
    pair_priority,
    predict_ports,
    priority,
)


def test_priority_formula() -> None:
    assert priority(CandidateKind.HOST) == (126 << 24) + (65535 << 8) + 255
    assert priority(CandidateKind.SERVER_REFLEXIVE, 0, 1) == (100 << 24) + 255
    assert (
        priority(CandidateKind.HOST)
        > priority(CandidateKind.PEER_REFLEXIVE)
        > priority(CandidateKind.SERVER_REFLEXIVE)
        > priority(CandidateKind.PREDICTED)
        > priority(CandidateKind.RELAYED)
    )
    with pytest.raises(ValueError):
        priority(CandidateKind.HOST, 70000)


def test_pair_priority_is_symmetric_in_value_and_breaks_ties_by_role() -> None:
    g, d = priority(CandidateKind.HOST), priority(CandidateKind.SERVER_REFLEXIVE)
    assert pair_priority(g, d) == (d << 32) + 2 * g + 1
    assert pair_priority(d, g) == (d << 32) + 2 * g
    assert pair_priority(g, d) > pair_priority(d, g)


def test_predict_ports_steps_and_wraps() -> None:
    assert predict_ports(("203.0.113.2", 50000), 2, 3) == [("203.0.113.2", p) for p in (50002, 50004, 50006)]
    assert predict_ports(("203.0.113.2", 65535), 1, 2) == [("203.0.113.2", 1024), ("203.0.113.2", 1025)]


def _profile(mapping: MappingBehaviour, public: tuple[tuple[str, int], ...], delta: int | None) -> NatProfile:
    return NatProfile(mapping, FilteringBehaviour.UNKNOWN, public, (), None, delta, len(public), None)


def test_gather_ranks_host_then_reflexive_and_dedups() -> None:
    cands = gather([("192.168.1.2", 40000)], [("203.0.113.2", 40000), ("203.0.113.2", 40000)])
    assert [(c.kind, c.endpoint) for c in cands] == [
        (CandidateKind.HOST, ("192.168.1.2", 40000)),
        (CandidateKind.SERVER_REFLEXIVE, ("203.0.113.2", 40000)),
    ]
    public = gather([("198.51.100.20", 5000)], [("198.51.100.20", 5000)])
    assert len(public) == 1 and public[0].kind is CandidateKind.HOST


def test_gather_predicts_behind_sequential_symmetric_nat_only() -> None:
    sym = _profile(
        MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT, (("203.0.113.2", 50010), ("203.0.113.2", 50009)), 1
    )
    cands = gather([("192.168.1.2", 40000)], profile=sym, predictions=3)
    predicted = [c.endpoint for c in cands if c.kind is CandidateKind.PREDICTED]
    assert predicted == [("203.0.113.2", p) for p in (50011, 50012, 50013)]
    eim = _profile(MappingBehaviour.ENDPOINT_INDEPENDENT, (("203.0.113.2", 40000),), None)
    assert all(c.kind is not CandidateKind.PREDICTED for c in gather([], profile=eim))
    random_sym = _profile(MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT, (("203.0.113.2", 50010),), None)
    assert all(c.kind is not CandidateKind.PREDICTED for c in gather([], profile=random_sym))


def test_gather_limit_and_endpoints_order() -> None:
    host = [(f"10.0.0.{i}", 1) for i in range(12)]
    cands = gather(host, limit=8)
    assert len(cands) == 8
    assert endpoints(list(reversed(cands))) == tuple(c.endpoint for c in cands)
