"""The resend timer: first guess, smoothing, and its bounds."""

from __future__ import annotations

import pytest

from dht.rtt import ResendTimer


def test_the_first_guess_is_the_configured_wait() -> None:
    assert ResendTimer(1.0, 0.3).timeout() == 1.0


def test_steady_answers_bring_the_wait_down_to_the_floor_and_no_lower() -> None:
    timer = ResendTimer(1.0, 0.3)
    for _ in range(40):
        timer.sample(0.05)
    assert timer.timeout() == 0.3


def test_the_wait_follows_the_answer_times_and_their_spread() -> None:
    timer = ResendTimer(2.0, 0.1)
    for rtt in [0.2, 0.4] * 20:
        timer.sample(rtt)
    assert timer.srtt is not None and 0.25 < timer.srtt < 0.35
    assert 0.5 < timer.timeout() < 1.0  # srtt + 4 x deviation of about 0.1


def test_slow_answers_never_raise_the_wait_above_the_configured_one() -> None:
    timer = ResendTimer(1.0, 0.3)
    for _ in range(10):
        timer.sample(5.0)
    assert timer.timeout() == 1.0


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        ResendTimer(0.2, 0.3)
