"""The ``ipop`` command line for real: ``ipop up`` in a subprocess answers ``ipop status`` through its
control socket and stops within 2 s on SIGTERM and SIGINT with status 0 and no traceback; user errors
are one line on stderr."""

from __future__ import annotations

import asyncio
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

from ipop import cli, dhtsim
from ipop.control import ControlError, ControlServer, arg
from ipop.state import MAC_FILE
from tests.netns import Lab, lab, wait_for

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(ROOT)}
IPOP = [sys.executable, "-m", "ipop"]
STOP_LIMIT_S = 2.0


def write_config(tmp_path: Path, name: str = "n1", extra: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"[node]\nname = '{name}'\nstate_dir = 'state-{name}'\nlisten = '127.0.0.1:0'\n"
        "[overlay]\nsecret = '0123456789abcdef0123'\nbootstrap = []\n" + extra
    )
    return path


def ipop(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IPOP, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **ENV}
    )


def status_json(config: Path) -> dict[str, Any] | None:
    done = ipop("status", "-c", str(config), "--json")
    if done.returncode != 0:
        return None
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture
def plab(tmp_path: Path) -> Iterator[Lab]:
    """A lab for processes only (no namespaces): whatever it started is stopped at the end."""
    with lab(tmp_path) as the_lab:
        yield the_lab


def stop_and_time(proc: Any, sig: int) -> float:
    start = time.monotonic()
    proc.signal(sig)
    proc.popen.wait(STOP_LIMIT_S + 3)
    return time.monotonic() - start


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_up_answers_status_and_stops_cleanly(plab: Lab, tmp_path: Path, sig: int) -> None:
    config = write_config(tmp_path)
    node = plab.start("n1", [*IPOP, "up", "-c", str(config)], env=ENV)
    status = wait_for(lambda: status_json(config), 20, "ipop status to answer")
    assert status["node"]["name"] == "n1"
    assert status["node"]["state"] == "running"
    assert status["node"]["pid"] == node.pid
    assert status["node"]["namespace"] is None
    assert len(status["node"]["address"]) == 40
    human = ipop("status", "-c", str(config))
    assert human.returncode == 0
    assert "[node]" in human.stdout and status["node"]["address"] in human.stdout

    elapsed = stop_and_time(node, sig)
    assert node.popen.returncode == 0, node.stderr()
    assert elapsed < STOP_LIMIT_S
    stderr = node.stderr()
    assert "Traceback" not in stderr
    assert f"[n1 {status['node']['short']}] ipop.runtime: stopped" in stderr
    gone = ipop("status", "-c", str(config))
    assert gone.returncode == 1
    assert gone.stderr == f"ipop status: no node is running with state directory {tmp_path / 'state-n1'}\n"


def test_identity_survives_a_restart(plab: Lab, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    addresses = []
    for i in range(2):
        node = plab.start(f"n1-{i}", [*IPOP, "up", "-c", str(config)], env=ENV)
        addresses.append(wait_for(lambda: status_json(config), 20, "status")["node"]["address"])
        assert stop_and_time(node, signal.SIGTERM) < STOP_LIMIT_S
    assert addresses[0] == addresses[1]


def test_a_second_node_on_the_same_state_directory_is_refused(plab: Lab, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    first = plab.start("first", [*IPOP, "up", "-c", str(config)], env=ENV)
    wait_for(lambda: status_json(config), 20, "the first node")
    second = ipop("up", "-c", str(config))
    assert second.returncode == 1
    assert second.stderr.endswith(
        f"ipop up: state directory {tmp_path / 'state-n1'} is in use by another ipop node (pid {first.pid})\n"
    )
    assert "Traceback" not in second.stderr
    assert first.alive()


@pytest.mark.parametrize("command", ["up", "status"])
def test_a_bad_config_is_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    config = write_config(tmp_path, extra="[network]\nsubnet = '10.250.0.0/33'\n")
    done = ipop(command, "-c", str(config))
    assert done.returncode == 2
    assert done.stderr == (
        f"ipop {command}: {config}: [network] subnet: '10.250.0.0/33' is not an IPv4 network\n"
    )
    assert done.stdout == ""


def test_a_missing_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = ipop("up", "-c", str(tmp_path / "nope.toml"))
    assert (done.returncode, done.stderr) == (
        2,
        f"ipop up: {tmp_path / 'nope.toml'}: cannot read: No such file or directory\n",
    )


def test_usage_errors_exit_2_without_traceback() -> None:
    for args in (
        [],
        ["up"],
        ["dht", "put", "k", "v", "-c", "x"],
        ["simulate", "--nodes", "0"],
        ["frobnicate"],
    ):
        done = ipop(*args)
        assert done.returncode == 2, args
        assert "usage: ipop" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.system
def test_up_with_a_network_section_opens_the_tap_device(netlab: Lab, tmp_path: Path) -> None:
    ns = netlab.netns("up")
    config = write_config(tmp_path, extra="[network]\ndevice = 'ipop9'\nmtu = 1200\n")
    node = netlab.start("n1", [*IPOP, "up", "-c", str(config)], ns=ns, env=ENV)
    status = wait_for(lambda: status_json(config), 20, "status of the node in the namespace")
    mac = (tmp_path / "state-n1" / MAC_FILE).read_text().strip()
    assert status["node"]["namespace"] == "default"
    assert status["tap"]["device"] == "ipop9" and status["tap"]["mac"] == mac and status["tap"]["mtu"] == 1200
    link = json.loads(netlab.ip(ns, "-j", "link", "show", "ipop9"))[0]
    assert (link["address"], link["mtu"]) == (mac, 1200)
    assert stop_and_time(node, signal.SIGTERM) < STOP_LIMIT_S
    assert node.popen.returncode == 0 and "Traceback" not in node.stderr()
    assert "ipop9" not in netlab.ip(ns, "-br", "link")


# -- dht and simulate through the CLI, against doubles of their seams -----------------------------------


async def test_dht_commands_go_through_the_control_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    (tmp_path / "state-n1").mkdir(mode=0o700)
    calls: list[tuple[str, dict[str, Any]]] = []
    store: dict[str, list[str]] = {}

    def handler(cmd: str) -> Any:
        async def handle(args: dict[str, Any]) -> Any:
            calls.append((cmd, args))
            key = arg(args, "key", str)
            if cmd == "dht.get":
                return [{"value": v, "ttl_s": 60.0} for v in store.get(key, [])]
            if cmd == "dht.create" and key in store:
                raise ControlError(f"{key!r} is held by another owner")
            if cmd == "dht.delete":
                store[key].remove(arg(args, "value", str))
                return None
            store.setdefault(key, []).append(arg(args, "value", str))
            return {"replicas": 3}

        return handle

    server = ControlServer(tmp_path / "state-n1" / "control.sock")
    for cmd in ("dht.get", "dht.put", "dht.create", "dht.delete"):
        server.register(cmd, handler(cmd))
    await server.start()
    c = str(config)

    async def run(*args: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(cli.main, list(args))
        out, err = capsys.readouterr()
        return code, out, err

    try:
        assert await run("dht", "put", "ns:x", "one", "--ttl", "60", "-c", c) == (0, "replicas  3\n", "")
        assert await run("dht", "create", "ns:x", "two", "--ttl", "5", "-c", c) == (
            1,
            "",
            "ipop dht create: 'ns:x' is held by another owner\n",
        )
        assert await run("dht", "get", "ns:x", "-c", c) == (0, "one  (ttl_s=60)\n", "")
        code, out, _ = await run("dht", "get", "ns:x", "--json", "-c", c)
        assert (code, json.loads(out)) == (0, [{"value": "one", "ttl_s": 60.0}])
        assert await run("dht", "delete", "ns:x", "one", "-c", c) == (0, "", "")
        assert await run("dht", "get", "ns:x", "-c", c) == (1, "", "ipop dht get: no value under 'ns:x'\n")
    finally:
        await server.close()
    assert calls[0] == ("dht.put", {"key": "ns:x", "value": "one", "ttl": 60.0})
    assert calls[1] == ("dht.create", {"key": "ns:x", "value": "two", "ttl": 5.0})
    assert calls[4] == ("dht.delete", {"key": "ns:x", "value": "one"})


def test_dht_commands_on_the_first_node_of_a_new_overlay(plab: Lab, tmp_path: Path) -> None:
    """A lone node holds every key itself: put, get, create (twice: the second is refused), delete."""
    config = write_config(tmp_path)
    plab.start("n1", [*IPOP, "up", "-c", str(config)], env=ENV)
    wait_for(lambda: status_json(config), 20, "the node")
    c = str(config)
    assert ipop("dht", "put", "colour", "blue", "--ttl", "600", "-c", c).returncode == 0
    got = ipop("dht", "get", "colour", "-c", c, "--json")
    assert got.returncode == 0, got.stderr
    assert [v["value"] for v in json.loads(got.stdout)] == ["blue"]
    assert ipop("dht", "create", "name", "mine", "--ttl", "600", "-c", c).returncode == 0
    again = ipop("dht", "create", "name", "mine", "--ttl", "600", "-c", c)
    assert again.returncode == 0 or "owned" in again.stderr
    assert ipop("dht", "delete", "colour", "blue", "-c", c).returncode == 0
    gone = ipop("dht", "get", "colour", "-c", c)
    assert gone.returncode == 1 and "no value under 'colour'" in gone.stderr


def test_simulate_prints_one_json_object_with_the_promised_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """A real (small) simulation through the CLI: stdout is exactly one JSON object."""
    assert cli.main(["simulate", "--nodes", "30", "--seed", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    fields = (
        "nodes seed ring_consistent hops_mean hops_p50 hops_p99 hops_max route_failures join_s_p50"
        " join_s_p99 converge_s maint_msgs_per_node_s maint_bytes_per_node_s mem_bytes_per_node sim_speed"
        " sim_speed_cpu wall_s"
    )
    for field in fields.split():
        assert field in result, field
    assert result["nodes"] == 30 and result["seed"] == 3
    assert result["ring_consistent"] is True
    assert result["route_failures"] == 0


def test_simulate_refuses_a_share_of_blocked_pairs_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["simulate", "--nodes", "10", "--nat-blocked", "1.5"])
    assert exit_.value.code == 2
    assert "not a fraction between 0 and 1" in capsys.readouterr().err


def test_simulate_dht_with_churn_prints_the_issues_fields(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--dht --session-median`` through the CLI, small and short (a 30 s window instead of five
    minutes): every overlay field is kept and issue 3's DHT fields are added."""
    monkeypatch.setattr(dhtsim, "MEASURE_S", 30.0)
    argv = ["simulate", "--nodes", "20", "--seed", "4", "--json", "--dht", "--session-median", "600"]
    assert cli.main([*argv, "--create-trials", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    fields = (
        "nodes ring_consistent hops_mean route_failures converge_s wall_s session_median_s create_trials"
        " create_double_winners create_success_rate get_success_rate get_latency_s_p50 get_latency_s_p99"
        " records_lost dht_bytes_per_node_s dead_link_share"
    )
    for field in fields.split():
        assert field in result, field
    assert result["session_median_s"] == 600.0 and result["create_trials"] == 1
    assert result["create_double_winners"] == 0 and result["gets"] > 50


def test_simulate_with_blocked_nat_pairs_reports_routability(capsys: pytest.CaptureFixture[str]) -> None:
    """Nodes behind NAT models, a third of whose pairs cannot link directly: the figures say so."""
    assert cli.main(["simulate", "--nodes", "40", "--seed", "2", "--nat-blocked", "0.3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.2 <= result["nat_pairs_blocked"] <= 0.4
    assert result["routability"] >= 0.99
    assert 0 < result["links_direct_share"] < 1 and result["links_relayed"] > 0
    assert result["direct_link_s_p50"] <= 1.0


STUBBORN_NODE = """
import asyncio, sys
from pathlib import Path
from ipop import runtime
from ipop.configfile import load_config
from ipop.logs import configure_logging

class Stubborn:
    name = "stubborn"

    async def run(self):
        while True:  # swallows every cancellation: a component that never finishes
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass

    def status(self):
        return {}

async def build(ctx):
    return [Stubborn()]

runtime.build_components = build
configure_logging("info")
runtime.run_node(load_config(Path(sys.argv[1])))
"""


def test_a_component_that_does_not_stop_is_cut_off_by_the_watchdog(plab: Lab, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    node = plab.start("stubborn", [sys.executable, "-c", STUBBORN_NODE, str(config)], env=ENV)
    wait_for(lambda: status_json(config), 20, "the node")
    assert stop_and_time(node, signal.SIGTERM) < STOP_LIMIT_S
    assert node.popen.returncode == 1
    assert "components still running 1.5 s after the stop: ['stubborn']; exiting now" in node.stderr()
