"""System test of issue 7: the data plane of two real ``ipop up`` nodes, with TAP offloads on and off.

Two namespaces joined by a veth pair (the underlay, MTU 1500); node a starts a new overlay, node b
joins through it; each machine takes its address with busybox udhcpc. Through the nodes go a 50 MB TCP
transfer and a UDP stream, and what arrived is compared with what was sent, by SHA-256. With offloads
and off, the path then shrinks mid-transfer (both ends of the veth drop to MTU 1280): the transfer
completes without anyone's help, and the link's path MTU follows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.gate import make_gate, open_gate
from tests.ipop.streamcheck import expected_udp_digest
from tests.ipop.vpnlab import ENV, UDHCPC_SCRIPT
from tests.netns import Lab, Process, have_root, lab, run, wait_for

pytestmark = pytest.mark.system
SECRET = "data plane system test secret 0123456789"
UNDERLAY = ("192.168.78.1", "192.168.78.2")
TCP_BYTES = 50 * 1000 * 1000
UDP_COUNT, UDP_SIZE = 4000, 1100
TRANSFER_S = 240.0
"""Deadline of one 50 MB transfer: minutes even on a loaded 2-core machine with offloads off."""


@dataclass
class Node:
    lab: Lab
    name: str
    ns: str
    config: Path
    process: Process | None = None
    ip: str | None = None

    def cli(self, *args: str) -> Any:
        proc = run([sys.executable, "-m", "ipop", *args, "-c", str(self.config)], check=False, timeout=15)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip())
        return json.loads(proc.stdout)

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.cli("status", "--json")
        return result

    def sh(self, *cmd: str, timeout: float = 30.0) -> str:
        return self.lab.sh(self.ns, *cmd, timeout=timeout).stdout

    def dhcp(self) -> str:
        out = self.lab.workdir / f"{self.name}.lease"
        script = self.lab.workdir / f"{self.name}.udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT.format(out=out))
        script.chmod(0o755)

        def bound() -> str | None:
            self.lab.sh(
                self.ns, "udhcpc", "-f", "-q", "-n", "-i", "ipop0", "-s", str(script), "-t", "3", "-T", "1",
                check=False, timeout=30,
            )  # fmt: skip
            if not out.exists():
                return None
            env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
            return env.get("ip")

        self.ip = wait_for(bound, 60, f"a DHCP lease for {self.name}")
        return self.ip


@dataclass
class Pair:
    lab: Lab
    a: Node
    b: Node
    offload: bool


def make_node(the_lab: Lab, name: str, ns: str, ip: str, bootstrap: list[str], offload: bool) -> Node:
    config = the_lab.workdir / f"{name}.toml"
    config.write_text(
        f'[node]\nname = "{name}"\nstate_dir = "{the_lab.workdir / (name + ".state")}"\n'
        f'listen = "{ip}:5800"\nlog_level = "info"\n'
        f'[overlay]\nsecret = "{SECRET}"\nbootstrap = {json.dumps(bootstrap)}\n'
        f"[network]\noffload = {'true' if offload else 'false'}\n"
    )
    node = Node(the_lab, name, ns, config)
    node.process = the_lab.start(
        name, [sys.executable, "-m", "ipop", "up", "-c", str(config)], ns=ns, env=ENV
    )
    return node


@pytest.fixture(scope="module", params=[True, False], ids=["offload", "plain"])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    if not have_root():
        pytest.fail("system tests need root (CI runs as root); run `sudo make test`")
    offload = bool(request.param)
    with lab(tmp_path_factory.mktemp("dataplane")) as the_lab:
        ns_a, ns_b = the_lab.netns("a"), the_lab.netns("b")
        the_lab.veth(ns_a, "eth0", ns_b, "eth0", mtu=1500)
        the_lab.addr(ns_a, "eth0", f"{UNDERLAY[0]}/24")
        the_lab.addr(ns_b, "eth0", f"{UNDERLAY[1]}/24")
        a = make_node(the_lab, "a", ns_a, UNDERLAY[0], [], offload)
        b = make_node(the_lab, "b", ns_b, UNDERLAY[1], [f"udp://{UNDERLAY[0]}:5800"], offload)
        for node in (a, b):
            wait_for(lambda n=node: n.status()["network"]["joined"], 60, f"node {node.name} to join")
        a.dhcp(), b.dhcp()
        tap = a.status()["tap"]
        assert bool(tap["offloads"]) == offload, tap
        yield Pair(the_lab, a, b, offload)


def stream(pair: Pair, kind: str, *args: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a sink on b and a sender on a (tests.ipop.streamcheck); their final JSON lines."""
    a, b, the_lab = pair.a, pair.b, pair.lab
    assert a.ip and b.ip
    module = [sys.executable, "-m", "tests.ipop.streamcheck"]
    port = "7001" if kind == "tcp" else "7002"
    sink_args = [] if kind == "tcp" else [str(args[0])]
    sink = the_lab.start(f"{kind}-sink", [*module, f"{kind}-sink", b.ip, port, *sink_args], ns=b.ns, env=ENV)
    wait_for(lambda: "listening" in sink.stdout() or not sink.alive(), 20, f"the {kind} sink")
    sender = the_lab.start(
        f"{kind}-send", [*module, f"{kind}-send", b.ip, port, *map(str, args)], ns=a.ns, env=ENV
    )
    return_sink = wait_for(lambda: _done(sink), TRANSFER_S, f"the {kind} sink to finish")
    return_sender = wait_for(lambda: _done(sender), 30, f"the {kind} sender to finish")
    return return_sender, return_sink


def _done(proc: Process) -> dict[str, Any] | None:
    if proc.alive():
        return None
    lines = [line for line in proc.stdout().splitlines() if line.startswith("{")]
    assert lines and "listening" not in lines[-1], proc.stderr()[-2000:]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def test_a_50_mb_tcp_transfer_arrives_intact(pair: Pair) -> None:
    sent, got = stream(pair, "tcp", TCP_BYTES, 7)
    assert got == sent and got["bytes"] == TCP_BYTES
    fast = pair.a.status()["network"]["fast_path"]
    if pair.offload:
        assert fast["tx_direct"] > 0 and fast["tx_pieces"] > fast["tx_direct"]  # super-frames, cut
    else:
        assert fast["tx_direct"] > 0 and fast["tx_pieces"] == fast["tx_direct"]  # a datagram a packet


def test_a_udp_stream_arrives_intact(pair: Pair) -> None:
    _sent, got = stream(pair, "udp", UDP_COUNT, UDP_SIZE, 9)
    assert got["corrupt"] == 0
    assert got["received"] >= UDP_COUNT * 0.99, got["received"]
    assert got["sha256"] == expected_udp_digest(got["seqs"], UDP_SIZE, 9)


def test_a_shrinking_path_mtu_is_followed_mid_transfer(pair: Pair) -> None:
    a, b, the_lab = pair.a, pair.b, pair.lab
    assert b.ip
    module = [sys.executable, "-m", "tests.ipop.streamcheck"]
    sink = the_lab.start("shrink-sink", [*module, "tcp-sink", b.ip, "7003"], ns=b.ns, env=ENV)
    wait_for(lambda: "listening" in sink.stdout() or not sink.alive(), 20, "the tcp sink")
    gate = make_gate(the_lab.workdir / "shrunk")
    sender = the_lab.start(
        "shrink-send",
        [*module, "tcp-send", b.ip, "7003", str(TCP_BYTES), "11", str(TCP_BYTES // 5), str(gate)],
        ns=a.ns,
        env=ENV,
    )
    # A fifth of the way through, the path shrinks under the transfer: both ends of the veth.
    wait_for(lambda: "paused" in sender.stdout() or not sender.alive(), TRANSFER_S, "10 MB sent")
    assert sender.alive(), sender.stderr()[-2000:]
    for node in (a, b):
        node.sh("ip", "link", "set", "dev", "eth0", "mtu", "1280")
    open_gate(gate)
    got = wait_for(lambda: _done(sink), TRANSFER_S, "the transfer to complete over the narrower path")
    sent = wait_for(lambda: _done(sender), 30, "the sender to finish")
    assert got == sent and got["bytes"] == TCP_BYTES
    link = a.status()["overlay"]["links"][0]
    detail = json.dumps(
        [
            pair.offload,
            link,
            a.sh("ip", "route", "get", b.ip),
            a.sh("ip", "link", "show", "eth0"),
            a.status()["network"]["fast_path"],
        ]
    )
    assert link["pmtu"]["mtu"] <= 1280 - 28, detail
