"""The DHT between real processes: ``ipop dht`` commands on four ``ipop up`` nodes over loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import Lab, lab, wait_for

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(ROOT)}
IPOP = [sys.executable, "-m", "ipop"]

pytestmark = pytest.mark.system


def write_config(tmp_path: Path, name: str, bootstrap: list[int]) -> Path:
    path = tmp_path / f"{name}.toml"
    peers = ", ".join(f'"udp://127.0.0.1:{port}"' for port in bootstrap)
    path.write_text(
        f"[node]\nname = '{name}'\nstate_dir = 'state-{name}'\nlisten = '127.0.0.1:0'\n"
        f"[overlay]\nsecret = 'the DHT test overlay secret'\nbootstrap = [{peers}]\n"
    )
    return path


def ipop(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IPOP, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **ENV}
    )


def status(config: Path) -> dict[str, Any] | None:
    done = ipop("status", "-c", str(config), "--json")
    return json.loads(done.stdout) if done.returncode == 0 else None


@pytest.fixture
def plab(tmp_path: Path) -> Iterator[Lab]:
    with lab(tmp_path) as the_lab:
        yield the_lab


def test_records_written_on_one_node_are_read_on_another(plab: Lab, tmp_path: Path) -> None:
    first = write_config(tmp_path, "d0", [])
    plab.start("d0", [*IPOP, "up", "-c", str(first)], env=ENV)
    port = wait_for(lambda: (status(first) or {}).get("overlay", {}).get("listen_port"), 20, "d0")
    configs = [first]
    for i in range(1, 4):
        configs.append(write_config(tmp_path, f"d{i}", [port]))
        plab.start(f"d{i}", [*IPOP, "up", "-c", str(configs[-1])], env=ENV)
    wait_for(
        lambda: all((s := status(c)) and s["overlay"]["state"] == "joined" for c in configs), 60, "joins"
    )
    d0, d1, d2, d3 = (str(c) for c in configs)

    put = ipop("dht", "put", "colour", "blue", "--ttl", "600", "-c", d1)
    assert put.returncode == 0, put.stderr
    got = wait_for(
        lambda: (g := ipop("dht", "get", "colour", "-c", d3, "--json")).returncode == 0 and g, 30, "get"
    )
    assert [v["value"] for v in json.loads(got.stdout)] == ["blue"]

    assert ipop("dht", "create", "host:alpha", "mine", "--ttl", "600", "-c", d2).returncode == 0
    taken = ipop("dht", "create", "host:alpha", "yours", "--ttl", "600", "-c", d0)
    assert taken.returncode == 1 and "owned by another node" in taken.stderr

    forged = ipop("dht", "delete", "host:alpha", "mine", "-c", d3)  # not the owner
    still = ipop("dht", "get", "host:alpha", "-c", d0, "--json")
    assert [v["value"] for v in json.loads(still.stdout)] == ["mine"], forged.stderr
    assert ipop("dht", "delete", "host:alpha", "mine", "-c", d2).returncode == 0
    gone = ipop("dht", "get", "host:alpha", "-c", d1)
    assert gone.returncode == 1 and "no value under 'host:alpha'" in gone.stderr
