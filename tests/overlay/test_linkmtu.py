"""Path MTU bookkeeping of direct links (``overlay.linkmtu``) without nodes: probe codec, limits,
confirmation probes and black holes, refusals, endpoint changes."""

from __future__ import annotations

import pytest

from overlay import ASSUMED_PAYLOAD, CONFIRM_INTERVAL_S, DATA_OVERHEAD, LinkMtus, PmtuState
from overlay.linkmtu import probe_ack, probe_plaintext, probe_size

PEER = 0x1234 << 140


def settle(mtus: LinkMtus, path_mtu: int, now: float = 0.0) -> float:
    """Answer every probe that a path of ``path_mtu`` bytes carries until the search is complete."""
    sizes = mtus.start(PEER, now)
    for _ in range(200):
        for size in sizes:
            if size <= path_mtu:
                sizes = mtus.acked(PEER, size, now)
                break
        else:
            deadline = mtus.deadline(PEER)
            assert deadline is not None
            now = deadline
            sizes = mtus.on_timer(PEER, now)
        path = mtus.path(PEER)
        assert path is not None
        if path.state is PmtuState.COMPLETE:
            return now
    raise AssertionError("the search did not complete")


def test_a_probe_is_exactly_its_size_once_sealed_and_names_it() -> None:
    for size in (1232, 1472, 9000, 65507):
        plaintext = probe_plaintext(size, DATA_OVERHEAD)
        assert len(plaintext) + DATA_OVERHEAD == size
        assert probe_size(plaintext) == size
    assert probe_size(probe_ack(1400)) == 1400
    assert probe_size(b"\x05\x00") is None
    with pytest.raises(ValueError):
        probe_plaintext(DATA_OVERHEAD, DATA_OVERHEAD)


def test_before_measuring_the_limit_is_ethernets_and_afterwards_the_path() -> None:
    mtus = LinkMtus()
    assert mtus.limit(PEER) == ASSUMED_PAYLOAD  # unknown peer: the assumption
    settle(mtus, 1400)
    assert 1400 - 16 <= mtus.limit(PEER) <= 1400
    assert mtus.status(PEER) == {"state": "complete", "mtu": mtus.limit(PEER), "limit": mtus.limit(PEER)}


def test_confirmation_probes_keep_a_busy_link_and_three_misses_make_a_black_hole() -> None:
    mtus = LinkMtus()
    now = settle(mtus, 1472)
    assert mtus.limit(PEER) == 1472
    assert mtus.sent_full(PEER, now)  # plans a confirmation
    assert not mtus.sent_full(PEER, now)  # once
    now += CONFIRM_INTERVAL_S
    assert mtus.deadline(PEER) == now
    assert mtus.on_timer(PEER, now) == [1472]
    mtus.acked(PEER, 1472, now)  # confirmed: nothing changes
    assert mtus.limit(PEER) == 1472
    mtus.sent_full(PEER, now)
    now += CONFIRM_INTERVAL_S
    assert mtus.on_timer(PEER, now) == [1472]
    for _ in range(2):  # unanswered: asked again at once
        now += 1.0
        assert 1472 in mtus.on_timer(PEER, now)
    now += 1.0
    sizes = mtus.on_timer(PEER, now)  # the third miss: back to the base, searching again
    path = mtus.path(PEER)
    assert path is not None and path.state is PmtuState.BASE and path.mtu == 1232
    assert sizes == [1232]


def test_an_idle_link_sends_no_confirmation() -> None:
    mtus = LinkMtus()
    now = settle(mtus, 1472)
    assert mtus.on_timer(PEER, now + 100.0) == []


def test_a_refused_confirmed_size_is_a_black_hole_and_a_refused_bigger_one_bounds_the_search() -> None:
    mtus = LinkMtus()
    mtus.start(PEER, 0.0)
    mtus.too_big(PEER, 9000, 0.0)
    path = mtus.path(PEER)
    assert path is not None and path.high == 8999
    settle(mtus, 1472)
    mtus.too_big(PEER, 1472, 50.0)
    assert path.state is PmtuState.BASE


def test_forgotten_links_answer_nothing() -> None:
    mtus = LinkMtus()
    assert mtus.acked(PEER, 1232, 0.0) == [] and mtus.on_timer(PEER, 0.0) == []
    assert mtus.too_big(PEER, 1500, 0.0) == [] and mtus.deadline(PEER) is None
    assert mtus.status(PEER) is None and not mtus.sent_full(PEER, 0.0)
    mtus.start(PEER, 0.0)
    mtus.forget(PEER)
    assert PEER not in mtus


def test_after_a_failure_only_confirmed_sizes_are_sent() -> None:
    mtus = LinkMtus()
    settle(mtus, 1472)
    mtus.too_big(PEER, 1472, 10.0)  # the local interface shrank under a confirmed size
    assert mtus.limit(PEER) == 1232  # not the Ethernet assumption again: that would fail the same way


def test_a_refused_probe_below_the_assumption_only_bounds_the_search() -> None:
    mtus = LinkMtus()
    sizes = mtus.start(PEER, 0.0)
    sizes = mtus.acked(PEER, 1232, 0.0)  # the base arrived: the plateaus go out
    assert 1372 in sizes
    mtus.too_big(PEER, 1372, 0.0)  # our interface takes 1280: a probe, not data, was refused
    path = mtus.path(PEER)
    assert path is not None and path.state is PmtuState.SEARCHING and path.high == 1371


def test_a_late_answer_to_a_probe_sent_before_a_failure_does_not_restore_the_old_size() -> None:
    mtus = LinkMtus()
    now = settle(mtus, 1472)
    mtus.sent_full(PEER, now)
    now += CONFIRM_INTERVAL_S
    assert mtus.on_timer(PEER, now) == [1472]  # a confirmation goes out ...
    mtus.too_big(PEER, 1472, now)  # ... and then the interface shrinks under the data
    mtus.acked(PEER, 1472, now + 0.001)  # the confirmation's answer arrives late
    path = mtus.path(PEER)
    assert path is not None and path.mtu == 1232 and mtus.limit(PEER) == 1232


def test_while_the_first_search_runs_the_assumption_holds_unless_the_search_found_less() -> None:
    mtus = LinkMtus()
    mtus.start(PEER, 0.0)
    mtus.acked(PEER, 1232, 0.0)  # searching, with only the base confirmed
    assert mtus.limit(PEER) == ASSUMED_PAYLOAD  # not the base: that would shrink the machine's MTU
    mtus.too_big(PEER, 1392, 0.0)  # a probe (1420-byte plateau) refused: the path takes less
    assert mtus.limit(PEER) == 1391
