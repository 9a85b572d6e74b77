"""I/O. The ipop part of the data-plane benchmark (``bench.dataplane``): two ipop nodes started as real
processes (``python -m ipop up -c FILE``, each with a ``[network]`` section, so each has a TAP device) in
the namespaces of a :class:`bench.dataplane_lab.Lab`, joined into one ring; their virtual addresses
taken by DHCP when the node answers it, otherwise set statically; then throughput, RTT, CPU, keepalive
losses under load, DHCP and DNS times measured through them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from bench.dataplane_lab import UNDERLAY_A, UNDERLAY_B, Lab, wait_until

IPOP_SUBNET = "10.250.0.0/16"
IPOP_A, IPOP_B = "10.250.7.1", "10.250.7.2"
"""Static virtual addresses, used when the node does not answer DHCP."""
DNS_IP = "10.250.0.1"
"""The node's DNS server: the subnet's first usable address (issue 5)."""
TRAFFIC_DEADLINE_S = 20.0
"""How long the ipop nodes get to carry a first ping (joining the overlay included)."""


def _udhcpc(ns: str, dev: str) -> subprocess.CompletedProcess[str]:
    """One run of busybox's DHCP client on ``dev`` in ``ns``: three discovers a second apart, quit on a
    lease or on none, and no script (the caller reads the lease from its output)."""
    client = ["udhcpc", "-f", "-q", "-n", "-i", dev, "-t", "3", "-T", "1", "-s", "/bin/true"]
    return subprocess.run(
        ["ip", "netns", "exec", ns, *client],
        capture_output=True,
        text=True,
        timeout=30,
    )


class IpopRun:
    """Two ipop nodes in ``lab``'s namespaces and what is measured through them (:meth:`measure`)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def ipop_config(self, side: str, listen: str, bootstrap: list[str]) -> Path:
        state = self.lab.work / f"state-{side}"
        path = self.lab.work / f"ipop-{side}.toml"
        path.write_text(
            f'[node]\nname = "bench{side}"\nstate_dir = "{state}"\nlisten = "{listen}"\nlog_level = "info"\n'
            f'[overlay]\nsecret = "bench secret {self.lab.tag} 0123456789"\n'
            f"bootstrap = {json.dumps(bootstrap)}\n"
            f'[network]\ndevice = "{self.lab.tag}i{side}"\nsubnet = "{IPOP_SUBNET}"\n'
        )
        return path

    def measure(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ipop_gbps": None,
            "ipop_rtt_ms": None,
            "ipop_tcp_rtt_ms": None,
            "ipop_cpu_pct": None,
            "ipop_cpu_pct_per_node": None,
            "ipop_keepalive_lost": None,
            "ipop_links_lost": None,
            "ipop_tcp_retransmits": None,
            "ipop_socket_drops": None,
            "dhcp_bound_s_p50": None,
            "dns_ms_p50": None,
        }
        python = sys.executable
        root = str(Path(__file__).resolve().parent.parent)
        env = {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        conf_a = self.ipop_config("a", f"{UNDERLAY_A}:5800", [])
        conf_b = self.ipop_config("b", f"{UNDERLAY_B}:5800", [f"udp://{UNDERLAY_A}:5800"])
        nodes = [
            self.lab.start("ipop-a", [python, "-m", "ipop", "up", "-c", str(conf_a)], self.lab.ns_a, env),
            self.lab.start("ipop-b", [python, "-m", "ipop", "up", "-c", str(conf_b)], self.lab.ns_b, env),
        ]
        try:
            for node, ns, side in ((nodes[0], self.lab.ns_a, "a"), (nodes[1], self.lab.ns_b, "b")):
                dev = f"{self.lab.tag}i{side}"
                with contextlib.suppress(TimeoutError):
                    wait_until(partial(self.started, node, ns, dev), 15, dev)
                if node.poll() is not None:
                    self.lab.notes.append(
                        f"ipop node {side} exited at start: {self.lab.log('ipop-' + side)[-400:]}"
                    )
                    return out
            # Both nodes in the ring before any address is claimed: a claim made while node a was
            # alone must otherwise wait for the DHT to hand it over before node b can look it up.
            for conf, ns in ((conf_a, self.lab.ns_a), (conf_b, self.lab.ns_b)):
                with contextlib.suppress(TimeoutError):
                    wait_until(partial(self.joined, python, env, conf, ns), TRAFFIC_DEADLINE_S, "join")
            out["dhcp_bound_s_p50"] = self.dhcp_p50(f"{self.lab.tag}ia")
            if out["dhcp_bound_s_p50"] is None:
                for ns, side, ip in ((self.lab.ns_a, "a", IPOP_A), (self.lab.ns_b, "b", IPOP_B)):
                    self.lab.run("ip", "addr", "replace", f"{ip}/16", "dev", f"{self.lab.tag}i{side}", ns=ns)
                target = IPOP_B
            else:
                # udhcpc above ran with a script that configures nothing: now take the leases for real.
                self.dhcp_address_by(self.lab.ns_a, f"{self.lab.tag}ia", TRAFFIC_DEADLINE_S)
                target = (
                    self.dhcp_address_by(self.lab.ns_b, f"{self.lab.tag}ib", TRAFFIC_DEADLINE_S) or IPOP_B
                )
            if self.lab.ping_until(target, TRAFFIC_DEADLINE_S) is None:
                tail = self.lab.log("ipop-a").strip().splitlines()[-3:]
                self.lab.notes.append(
                    f"the ipop nodes carried no ping between their TAP devices within"
                    f" {TRAFFIC_DEADLINE_S:.0f} s, so the ipop figures are null"
                    f" (last lines of node a's log: {tail})"
                )
                return out
            both = ((conf_a, self.lab.ns_a), (conf_b, self.lab.ns_b))
            before = self.liveness(python, env, both)
            gbps, cpu = self.lab.iperf(target, [n.pid for n in nodes])
            out["ipop_tcp_rtt_ms"] = self.lab.last_tcp_rtt_ms
            out["ipop_tcp_retransmits"] = self.lab.last_tcp_retransmits
            after = self.liveness(python, env, both)
            if before is not None and after is not None:
                out["ipop_keepalive_lost"] = after[0] - before[0]
                out["ipop_links_lost"] = after[1] - before[1]
                out["ipop_socket_drops"] = after[2] - before[2]
            out["ipop_gbps"] = gbps
            out["ipop_cpu_pct_per_node"] = list(cpu.values())
            out["ipop_cpu_pct"] = round(sum(cpu.values()), 1)
            out["ipop_rtt_ms"] = self.lab.ping_ms(target)
            out["dns_ms_p50"] = self.dns_p50()
            return out
        finally:
            for node in nodes:
                self.lab.stop(node)

    def status(self, python: str, env: dict[str, str], conf: Path, ns: str) -> dict[str, Any]:
        """The node's ``ipop status --json`` ({} when it does not answer)."""
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, python, "-m", "ipop", "status", "--json", "-c", str(conf)],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=15,
        )
        try:
            status = json.loads(proc.stdout)
        except ValueError:
            return {}
        return status if isinstance(status, dict) else {}

    def joined(self, python: str, env: dict[str, str], conf: Path, ns: str) -> bool:
        """The node says its overlay has joined the ring."""
        try:
            return bool(self.status(python, env, conf, ns)["network"]["joined"])
        except (KeyError, TypeError):
            return False

    def liveness(
        self, python: str, env: dict[str, str], nodes: Sequence[tuple[Path, str]]
    ) -> list[int] | None:
        """Keepalive pings left unanswered, links given up for silence, and datagrams the kernel
        dropped because a node's UDP receive buffer was full, summed over ``nodes`` (config and
        namespace each); None when a node does not say."""
        totals = [0, 0, 0]
        for conf, ns in nodes:
            try:
                overlay = self.status(python, env, conf, ns)["overlay"]
                counters = overlay["counters"]
            except (KeyError, TypeError):
                return None
            totals[0] += int(counters.get("probes_unanswered", 0))
            totals[1] += int(counters.get("links_lost_silent", 0))
            totals[2] += int((overlay.get("socket") or {}).get("rx_dropped") or 0)
        return totals

    def started(self, node: subprocess.Popen[bytes], ns: str, dev: str) -> bool:
        """The node ended, or its TAP device exists."""
        if node.poll() is not None:
            return True
        return subprocess.run(["ip", "-n", ns, "link", "show", dev], capture_output=True).returncode == 0

    def dhcp_p50(self, dev: str, runs: int = 10) -> float | None:
        """Median seconds from starting udhcpc to a bound lease; None (with a note) when none binds."""
        times = []
        for _ in range(runs):
            t0 = time.monotonic()
            result = _udhcpc(self.lab.ns_a, dev)
            if result.returncode != 0:
                self.lab.notes.append(
                    "no DHCP answer from the ipop node (udhcpc failed), so dhcp_bound_s_p50 is null"
                )
                return None
            times.append(time.monotonic() - t0)
        return round(statistics.median(times), 3)

    def dhcp_address(self, ns: str, dev: str) -> str | None:
        result = _udhcpc(ns, dev)
        m = re.search(r"lease of ([\d.]+) obtained", result.stdout + result.stderr)
        if not m:
            return None
        self.lab.run("ip", "addr", "replace", f"{m.group(1)}/16", "dev", dev, ns=ns)
        return m.group(1)

    def dhcp_address_by(self, ns: str, dev: str, timeout: float) -> str | None:
        """A DHCP address for ``dev``, asking again until ``timeout``: node b hands out addresses only
        once it has joined the overlay, which may take a few seconds after node a's lease."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            address = self.dhcp_address(ns, dev)
            if address is not None:
                return address
        return None

    def dns_p50(self, runs: int = 20) -> float | None:
        name = "benchb.ipop"
        query = ["dig", f"@{DNS_IP}", "+tries=1", "+time=1", name, "A"]
        warm = self.lab.run(*query, ns=self.lab.ns_a, check=False)
        if "ANSWER SECTION" not in warm:
            self.lab.notes.append(f"no DNS answer for {name} from {DNS_IP}, so dns_ms_p50 is null")
            return None
        times = []
        for _ in range(runs):
            m = re.search(r"Query time: (\d+) msec", self.lab.run(*query, ns=self.lab.ns_a, check=False))
            if m:
                times.append(float(m.group(1)))
        return statistics.median(times) if times else None
