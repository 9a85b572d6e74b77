"""Real processes: twenty ``ipop up`` nodes on loopback form a consistent ring, a node with the wrong
secret never links, and every node stops within 2 s of SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import Lab, lab, wait_for

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(ROOT)}
IPOP = [sys.executable, "-m", "ipop"]
NODES = 20
STOP_LIMIT_S = 2.0

pytestmark = [pytest.mark.system, pytest.mark.slow]


def write_config(
    tmp_path: Path, name: str, bootstrap: list[int], secret: str = "a shared overlay secret"
) -> Path:
    path = tmp_path / f"{name}.toml"
    peers = ", ".join(f'"udp://127.0.0.1:{port}"' for port in bootstrap)
    path.write_text(
        f"[node]\nname = '{name}'\nstate_dir = 'state-{name}'\nlisten = '127.0.0.1:0'\n"
        f"[overlay]\nsecret = '{secret}'\nbootstrap = [{peers}]\nhandshake_timeout_s = 3.0\n"
    )
    return path


def status(config: Path) -> dict[str, Any] | None:
    done = subprocess.run(
        [*IPOP, "status", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **ENV},
    )
    if done.returncode != 0:
        return None
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture
def plab(tmp_path: Path) -> Iterator[Lab]:
    with lab(tmp_path) as the_lab:
        yield the_lab


def test_twenty_nodes_form_a_consistent_ring_and_an_outsider_never_links(plab: Lab, tmp_path: Path) -> None:
    first = write_config(tmp_path, "n00", [])
    procs = {"n00": plab.start("n00", [*IPOP, "up", "-c", str(first)], env=ENV)}
    configs = {"n00": first}
    port = wait_for(lambda: (status(first) or {}).get("overlay", {}).get("listen_port"), 20, "the first node")
    for i in range(1, NODES):
        name = f"n{i:02d}"
        configs[name] = write_config(tmp_path, name, [port])
        procs[name] = plab.start(name, [*IPOP, "up", "-c", str(configs[name])], env=ENV)

    def consistent() -> dict[str, dict[str, Any]] | None:
        views = {name: status(config) for name, config in configs.items()}
        if any(v is None or "overlay" not in v for v in views.values()):
            return None
        overlays = {name: v["overlay"] for name, v in views.items() if v is not None}
        ring = sorted(int(o["address"], 16) for o in overlays.values())
        for o in overlays.values():
            me = ring.index(int(o["address"], 16))
            left, right = ring[me - 1], ring[(me + 1) % len(ring)]
            if not o["left"] or not o["right"]:
                return None
            if int(o["left"][0], 16) != left or int(o["right"][0], 16) != right:
                return None
        return overlays

    overlays = wait_for(consistent, 90, "twenty nodes to form a consistent ring")
    assert all(o["state"] == "joined" for o in overlays.values())
    estimates = [o["n_estimate"] for o in overlays.values()]
    assert 8 <= sorted(estimates)[len(estimates) // 2] <= 50, estimates
    link = overlays["n05"]["links"][0]
    assert {"peer", "kinds", "endpoint", "rtt_ms", "age_s"} <= set(link)

    outsider = write_config(tmp_path, "outsider", [port], secret="some other secret entirely")
    plab.start("outsider", [*IPOP, "up", "-c", str(outsider)], env=ENV)
    seen = wait_for(
        lambda: (
            (s := status(outsider)) and "no bootstrap peer answered" in s["overlay"]["state_detail"] and s
        ),
        30,
        "the outsider to give up on its bootstrap peer",
    )
    assert seen["overlay"]["links"] == []
    assert seen["overlay"]["state"] == "bootstrapping"
    first_view = status(first)
    assert first_view is not None
    assert first_view["overlay"]["security"].get("bad_mac", 0) > 0  # it heard the outsider, and said nothing

    for name, proc in procs.items():
        start = time.monotonic()
        proc.signal(signal.SIGTERM)
        proc.popen.wait(STOP_LIMIT_S + 3)
        assert time.monotonic() - start < STOP_LIMIT_S, name
        assert proc.popen.returncode == 0, (name, proc.stderr()[-2000:])
        assert "Traceback" not in proc.stderr()
