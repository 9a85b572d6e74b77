"""Rendering of status answers: scalars aligned, lists of objects as tables, nesting indented."""

from __future__ import annotations

from ipop.render import format_value, render_status


def test_status_with_links_renders_as_a_table() -> None:
    status = {
        "node": {"name": "alice", "address": "3f2a9c1b00", "join_state": "joined", "namespace": None},
        "overlay": {
            "n_estimate": 12.0,
            "links": [
                {
                    "kind": "near",
                    "peer": "3f2a9c1c",
                    "endpoint": "10.0.0.2:5800",
                    "rtt_ms": 1.23456,
                    "age_s": 30,
                },
                {
                    "kind": "far",
                    "peer": "81aa0000",
                    "endpoint": "[2001:db8::1]:5800",
                    "rtt_ms": 12.5,
                    "age_s": 4,
                },
                {"kind": "shortcut", "peer": "00ff", "rtt_ms": None, "age_s": 0.5, "relayed": True},
            ],
            "counters": {"sent": 10, "received": 9},
            "neighbours": {"left": [{"peer": "aa"}], "right": []},
        },
        "tap": "not configured",
    }
    assert render_status(status) == "\n".join(
        [
            "[node]",
            "  name        alice",
            "  address     3f2a9c1b00",
            "  join_state  joined",
            "  namespace   -",
            "",
            "[overlay]",
            "  n_estimate  12",
            "  counters    sent=10, received=9",
            "  links (3)",
            "    KIND      PEER      ENDPOINT            RTT_MS  AGE_S  RELAYED",
            "    near      3f2a9c1c  10.0.0.2:5800       1.235   30     -",
            "    far       81aa0000  [2001:db8::1]:5800  12.5    4      -",
            "    shortcut  00ff      -                   -       0.5    yes",
            "  neighbours",
            "    right  -",
            "    left (1)",
            "      PEER",
            "      aa",
            "",
            "[tap]",
            "  not configured",
        ]
    )


def test_values() -> None:
    assert format_value(0.0) == "0"
    assert format_value(-0.0001) == "0"
    assert format_value(2.5) == "2.5"
    assert format_value(3) == "3"
    assert format_value(False) == "no"
    assert format_value(["a", 1]) == "a, 1"
    assert format_value([]) == "-"
    assert format_value({}) == "-"
