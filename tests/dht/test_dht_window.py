"""The code path of ``bench/dht_window.py`` at a small N: the command line, the overlay it builds, the
churned window, and the JSON it prints (the N = 1,000 figures are in docs/dht.md)."""

from __future__ import annotations

import json

import pytest

from bench.dht_window import FIELDS, main


@pytest.mark.timeout(300)
def test_the_window_bench_prints_the_dht_figures_of_a_churned_overlay(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """20 nodes, a 60 s median session, a 30 s window with two races: churn happened, the races ran
    with at most one winner each, gets answered, and the traffic figures are there."""
    assert (
        main(["--nodes", "20", "--session-median", "60", "--window", "30", "--trials", "2", "--seed", "3"])
        == 0
    )
    figures = json.loads(capsys.readouterr().out)
    assert set(FIELDS) <= set(figures)
    assert figures["nodes"] == 20 and figures["converge_s"] is not None
    assert figures["churn_deaths"] >= 1
    assert figures["create_trials"] == 2 and figures["create_double_winners"] == 0
    assert figures["gets"] >= 100 and figures["get_success_rate"] >= 0.8
    assert 0 < figures["get_latency_s_p50"] <= figures["get_latency_s_p99"] < 6.0
    assert figures["records_checked"] > 0 and figures["records_lost"] <= figures["records_checked"]
    assert 0 < figures["dht_replication_bytes_per_node_s"] < figures["dht_bytes_per_node_s"]
    assert figures["wall_s"] >= figures["wall_build_s"] > 0
    # The tail analysis: every slow get is one of the gets, and its causes are counted.
    assert 0 <= figures["get_tail_slow_gets"] <= figures["gets"]
    assert 0 <= figures["get_tail_first_routes_dead_share"] < 1
    assert len(figures["get_tail_examples"]) == min(12, figures["get_tail_slow_gets"])
    causes = figures["get_tail_causes"]
    assert (
        sum(causes.get(k, 0) for k in ("decided_by_resent_request", "decided_by_late_first_answer"))
        == (figures["get_tail_slow_gets"])
    )


def test_the_window_bench_refuses_a_window_of_nothing() -> None:
    with pytest.raises(SystemExit):
        main(["--nodes", "20", "--window", "0"])
